#!/usr/bin/env bash
# Container smoke test, for a machine with Docker (and, for the GPU check, an NVIDIA GPU with
# the NVIDIA container toolkit). It builds the image, starts it with ./models mounted, waits
# for /readyz, classifies one digit and checks the device each variant reports.
#
#   scripts/container_smoke.sh            # GPU image, expects /GPU:0
#   DEVICE=cpu scripts/container_smoke.sh # CPU image, expects /CPU:0
#   BASE_IMAGE=mnist-serve-base:bookworm-py3.11 ...  # base built by scripts/base_image.sh
#
# Needs trained models in ./models (mnist-serve train, or make demo). Stops the container on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE="${DEVICE:-gpu}"
IMAGE="mnist-serve:${DEVICE}"
PORT="${PORT:-8000}"
NAME="mnist-serve-smoke-$$"

[ -d models ] || { echo "no ./models: run 'mnist-serve train' (or 'make demo') first" >&2; exit 2; }
docker build --build-arg DEVICE="$DEVICE" ${BASE_IMAGE:+--build-arg BASE_IMAGE="$BASE_IMAGE"} -t "$IMAGE" .

gpu_flag=()
[ "$DEVICE" = "gpu" ] && gpu_flag=(--gpus all)
docker run -d --rm --name "$NAME" "${gpu_flag[@]}" -p "127.0.0.1:${PORT}:8000" \
    -v "$PWD/models:/models:ro" "$IMAGE" >/dev/null
trap 'docker stop "$NAME" >/dev/null 2>&1 || true' EXIT

echo "waiting for /readyz ..."
for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:${PORT}/readyz" >/dev/null 2>&1; then break; fi
    sleep 1
done
curl -fsS "http://127.0.0.1:${PORT}/readyz"; echo

body=$(python3 -c 'print({"image": [[1.0 if 4 <= r < 24 and 13 <= c < 15 else 0.0 for c in range(28)] for r in range(28)]}.__repr__().replace("\x27", "\""))')
answer=$(curl -fsS "http://127.0.0.1:${PORT}/predict/depthwise" -H 'content-type: application/json' -d "$body")
echo "predict: $answer"
echo "$answer" | grep -q '"digit"' || { echo "FAIL: no prediction" >&2; exit 1; }

expected="/CPU:0"
[ "$DEVICE" = "gpu" ] && expected="/GPU:0"
devices=$(curl -fsS "http://127.0.0.1:${PORT}/variants" | python3 -c 'import json,sys; print(" ".join(v["device"] for v in json.load(sys.stdin)))')
echo "devices: $devices"
case "$devices" in
    *"$expected"*) echo "OK: served on $expected" ;;
    *) echo "FAIL: expected $expected, got $devices" >&2; exit 1 ;;
esac
