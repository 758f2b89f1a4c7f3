#!/bin/sh
# The api image's entrypoint: signing on, with no manual step.
#
# PREDICTOR_SIGNING_KEY_FILE names the key (compose: a volume, /keys/signing.key;
# Kubernetes: a mounted Secret). When the file is missing it is created here, once;
# the demo models baked into the image were signed at build time with a key that was
# thrown away, so on that first start they are trained again into the store and
# signed with the new key. With a key that already exists (a mounted secret, a later
# start) nothing is trained: the store is served as it is, verified with that key.
set -eu
if [ "${1:-}" = "gunicorn" ] && [ -n "${PREDICTOR_SIGNING_KEY_FILE:-}" ] && [ -z "${PREDICTOR_SIGNING_KEY:-}" ]; then
  if predictor signing-key init | grep -q '^created'; then
    echo "entrypoint: created the signing key $PREDICTOR_SIGNING_KEY_FILE; signing the demo models with it"
    predictor verify >/dev/null 2>&1 || predictor train-demo
  fi
fi
exec "$@"
