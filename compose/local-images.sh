#!/usr/bin/env bash
# Builds the local images that stand in for registry images on machines that
# cannot pull any (see docs/deploy.md, "Running the stack on podman"):
#
#   localhost/predictor-base:bookworm        Debian 12 + Python 3.11, from debootstrap;
#                                            the Dockerfile's BASE_IMAGE here
#   localhost/predictor-ci/nginx:1.22        laid out like the official nginx image
#   localhost/predictor-ci/redis:7.0         laid out like the official redis image
#   localhost/predictor-ci/prometheus:2.42   laid out like prom/prometheus
#   localhost/predictor-ci/seaweedfs:4.48    like chrislusf/seaweedfs (only with `s3`:
#                                            the compose s3 profile; never by default)
#
# Each image is built only when it is missing or its build files changed (a
# content-hash label), so a rerun costs a few `podman image inspect` calls.
# The debootstrapped root filesystem is kept as a tarball (and the .debs it
# was made from) under $PREDICTOR_IMAGE_CACHE, so even a wiped podman storage
# is restored in seconds.
#
# Usage: compose/local-images.sh [base|standins|all|s3]   (default: all; s3 = base + SeaweedFS)
# Needs: root, podman, debootstrap (deps/apt-deploy.txt); CONTAINERS_CONF is
# set to compose/containers.conf unless already set.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${PREDICTOR_IMAGE_CACHE:-/var/cache/predictor-images}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
BASE_IMAGE=${PREDICTOR_BASE_IMAGE:-localhost/predictor-base:bookworm}
HOST_CA=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}

log() { printf '[local-images %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

image_label() { # image label -> value or empty
  podman image inspect --format "{{ index .Labels \"$2\" }}" "$1" 2>/dev/null || true
}

base_recipe_hash() {
  # Everything that decides the base's content: this script's recipe part and the host CA.
  { sed -n '/^# --- base recipe/,/^# --- end base recipe/p' "$0"; cat "$HOST_CA"; } |
    sha256sum | cut -c1-16
}

# --- base recipe -----------------------------------------------------------
make_rootfs_tar() { # $1 = output tarball
  local out=$1 rootfs
  rootfs=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  mkdir -p "$CACHE/debs"
  log "debootstrap bookworm (minbase + python3) into $rootfs"
  debootstrap --variant=minbase --cache-dir="$CACHE/debs" \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -30 "$CACHE/debootstrap.log" >&2; rm -rf "$rootfs"; return 1; }
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
EOF
  # Like Debian's own container images: no service starts during apt installs,
  # no package caches left in layers.
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod 755 "$rootfs/usr/sbin/policy-rc.d"
  printf 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };\n' \
    >"$rootfs/etc/apt/apt.conf.d/docker-clean"
  # This machine reaches the registries through a TLS proxy whose CA only the
  # host trusts: builds (pip, apt over https) need it inside the image. Kept as
  # a local CA too, so update-ca-certificates in a later layer keeps it.
  mkdir -p "$rootfs/usr/local/share/ca-certificates"
  cp "$HOST_CA" "$rootfs/usr/local/share/ca-certificates/host-ca-bundle.crt"
  cp "$HOST_CA" "$rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log
  tar -C "$rootfs" --numeric-owner -cf "$out.tmp" .
  mv "$out.tmp" "$out"
  rm -rf "$rootfs"
}

build_base() {
  local want have tarball
  want=$(base_recipe_hash)
  have=$(image_label "$BASE_IMAGE" org.predictor.recipe)
  if [[ "$have" == "$want" ]]; then
    log "$BASE_IMAGE is up to date"
    return 0
  fi
  mkdir -p "$CACHE"
  tarball="$CACHE/bookworm-python-$want.tar"
  [[ -f "$tarball" ]] || make_rootfs_tar "$tarball"
  log "importing $tarball as $BASE_IMAGE"
  podman import -q \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL org.predictor.recipe=$want" \
    --change 'CMD ["python3"]' \
    "$tarball" "$BASE_IMAGE" >/dev/null
  # Older tarballs of other recipes are dead weight.
  find "$CACHE" -maxdepth 1 -name 'bookworm-python-*.tar' ! -name "${tarball##*/}" -delete
}
# --- end base recipe -------------------------------------------------------

build_standin() { # $1 = directory under compose/images, $2 = image name
  local dir=$HERE/images/$1 image=$2 want have
  want=$( { tar -C "$dir" -c --sort=name --mtime=@0 --owner=0 --group=0 . ; \
            image_label "$BASE_IMAGE" org.predictor.recipe; } | sha256sum | cut -c1-16)
  have=$(image_label "$image" org.predictor.recipe)
  if [[ "$have" == "$want" ]]; then
    log "$image is up to date"
    return 0
  fi
  log "building $image"
  podman build --format docker --layers=false --pull=never -q \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    --label "org.predictor.recipe=$want" \
    -t "$image" "$dir" >"$CACHE/build-$1.log" 2>&1 ||
    { tail -40 "$CACHE/build-$1.log" >&2; return 1; }
}

build_standins() {
  build_standin nginx localhost/predictor-ci/nginx:1.22
  build_standin redis localhost/predictor-ci/redis:7.0
  build_standin prometheus localhost/predictor-ci/prometheus:2.42
}

[[ $(id -u) == 0 ]] || { echo "local-images.sh: needs root (debootstrap, podman storage)" >&2; exit 1; }
mkdir -p "$CACHE"
# One builder at a time (concurrent test runs share the cache and the image names).
exec 9>"$CACHE/.lock"
flock -w 900 9 || { echo "local-images.sh: $CACHE/.lock held for 15 min" >&2; exit 1; }
case "${1:-all}" in
  base) build_base ;;
  standins) build_standins ;;
  all) build_base; build_standins ;;
  s3) build_base; build_standin seaweedfs localhost/predictor-ci/seaweedfs:4.48 ;;
  *) echo "usage: $0 [base|standins|all|s3]" >&2; exit 2 ;;
esac
