#!/bin/sh
# The api image's entrypoint: signing on, with no manual step.
#
# PREDICTOR_SIGNING_KEY_FILE names the key (compose: a volume, /keys/signing.key;
# Kubernetes: a mounted Secret). When the file is missing it is created here, once;
# the demo models baked into the image were signed at build time with a key that was
# thrown away, so on that first start they are trained again into the store and
# signed with the new key. With a key that already exists (a mounted secret, a later
# start) nothing is trained: the store is served as it is, verified with that key.
#
# Compose's s3 profile (docs/deploy.md): COMPOSE_S3_STORE and COMPOSE_S3_ENDPOINT name
# the profile's SeaweedFS. When the endpoint's host resolves (its service runs:
# `docker compose --profile s3 up`), the store is that bucket instead of /models; the
# bucket is created and the demo models trained into it when it holds none.
set -eu
if [ -n "${COMPOSE_S3_STORE:-}" ] && [ -n "${COMPOSE_S3_ENDPOINT:-}" ]; then
  s3_host=${COMPOSE_S3_ENDPOINT#*://}
  s3_host=${s3_host%%[:/]*}
  if getent hosts "$s3_host" >/dev/null 2>&1; then
    export PREDICTOR_MODEL_STORE="$COMPOSE_S3_STORE" AWS_ENDPOINT_URL="$COMPOSE_S3_ENDPOINT"
    # The local SeaweedFS checks no S3 credentials; boto3 still wants some.
    export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-compose}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-compose}"
    export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
    echo "entrypoint: model store $PREDICTOR_MODEL_STORE at $AWS_ENDPOINT_URL (compose s3 profile)"
  fi
fi
if [ "${1:-}" = "gunicorn" ]; then
  case "${PREDICTOR_MODEL_STORE:-}" in
    s3://*)
      python3 -c '
import os, boto3
bucket = os.environ["PREDICTOR_MODEL_STORE"][5:].split("/")[0]
s3 = boto3.client("s3")
try:
    s3.head_bucket(Bucket=bucket)
except Exception:
    s3.create_bucket(Bucket=bucket)
    print(f"entrypoint: created the bucket {bucket}")'
      ;;
  esac
fi
if [ "${1:-}" = "gunicorn" ] && [ -n "${PREDICTOR_SIGNING_KEY_FILE:-}" ] && [ -z "${PREDICTOR_SIGNING_KEY:-}" ]; then
  if predictor signing-key init | grep -q '^created'; then
    echo "entrypoint: created the signing key $PREDICTOR_SIGNING_KEY_FILE; signing the demo models with it"
    predictor verify >/dev/null 2>&1 || predictor train-demo
  fi
  # A new bucket holds nothing to serve yet (checked only for S3: no cost by default).
  if [ "${PREDICTOR_MODEL_STORE#s3://}" != "${PREDICTOR_MODEL_STORE:-}" ] &&
     [ "$(predictor models --json)" = "[]" ]; then
    echo "entrypoint: no models in $PREDICTOR_MODEL_STORE; training the demo models into it"
    predictor train-demo
  fi
fi
exec "$@"
