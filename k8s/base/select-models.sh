#!/bin/sh
# Init container of the api pods: builds the pod's own model store in /served
# from the versions this pod template names, so that the Deployment (not a
# shared `current` file) decides what a pod serves and a rollout or
# `kubectl rollout undo` switches versions pod by pod.
#
# /etc/predictor/served-models holds one file per model (name = model, content =
# version). Each version is copied from the shared model store (/store, the
# volume that `predictor publish` writes to) or, when that store lacks it, from
# the image's built-in demo models (/models), then made current.
set -eu
served=/etc/predictor/served-models
found=0
for file in "$served"/*; do
  [ -f "$file" ] || continue
  name=$(basename "$file")
  version=$(tr -d ' \n' <"$file")
  src=
  for root in /store /models; do
    if [ -f "$root/$name/$version/manifest.json" ]; then
      src=$root/$name/$version
      break
    fi
  done
  if [ -z "$src" ]; then
    echo "select-models: $name version $version is neither in /store nor in the image's /models" >&2
    exit 1
  fi
  rm -rf "/served/$name/$version"
  mkdir -p "/served/$name"
  cp -R "$src" "/served/$name/$version"
  predictor promote --store /served "$name" "$version" >/dev/null
  echo "select-models: $name version $version from $src"
  found=$((found + 1))
done
[ "$found" -gt 0 ] || { echo "select-models: no model named in $served" >&2; exit 1; }
