#!/usr/bin/env bash
# Build a Python 3.11 base image from Debian packages, for machines that cannot pull images.
#
#   scripts/base_image.sh                 # tags mnist-serve-base:bookworm-py3.11 (if missing)
#   FORCE=1 scripts/base_image.sh         # rebuild even if the tag exists
#   docker build --build-arg BASE_IMAGE=mnist-serve-base:bookworm-py3.11 ...
#
# The Dockerfile's default base, python:3.11-slim, is Debian with CPython 3.11 and pip. This is
# the same thing made with debootstrap from a Debian mirror (the only registry such a machine
# may reach): Debian 12 "bookworm" (its python3 is 3.11), minbase, plus python3, venv and CA
# certificates. pip lives in a virtual environment at /opt/venv, first on PATH, so `python` and
# `pip` mean what they mean in the official image (Debian's own pip refuses system installs).
# Needs root, debootstrap and a running Docker engine. About 3 minutes; the result is ~150 MB.
set -euo pipefail

TAG="${TAG:-mnist-serve-base:bookworm-py3.11}"
SUITE="${SUITE:-bookworm}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"

if [ -z "${FORCE:-}" ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG exists (FORCE=1 to rebuild)"
  exit 0
fi
command -v debootstrap >/dev/null || {
  echo "installing debootstrap"; apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }

ROOT="$(mktemp -d /tmp/base-rootfs.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
echo "debootstrap $SUITE into $ROOT (minbase)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
  "$SUITE" "$ROOT" "$MIRROR" >/dev/null
chroot "$ROOT" python3 -m venv /opt/venv
chroot "$ROOT" /opt/venv/bin/python -c "import sys; assert sys.version_info[:2] == (3, 11), sys.version"
# Smaller: no apt lists, docs or caches in the image.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/* "$ROOT"/usr/share/doc/* \
  "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/*
echo "importing as $TAG"
tar -C "$ROOT" -c . | docker import \
  --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$TAG" >/dev/null
docker run --rm --network none "$TAG" python -c "import sys, ssl, venv; print('base ok:', sys.version.split()[0])"
