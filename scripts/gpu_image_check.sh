#!/usr/bin/env bash
# Build the GPU image (tensorflow[and-cuda]: ~3 GB of NVIDIA wheels) and check, without a GPU,
# that its TensorFlow imports and was built with CUDA, and that its ONNX Runtime is
# onnxruntime-gpu with the CUDA execution provider; print the image's size. The GPU run
# itself needs a GPU: scripts/container_smoke.sh on such a machine.
#
#   scripts/gpu_image_check.sh     (make container-gpu-check)  ~3 min, ~7 GB of disk
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/docker_engine.sh
bash scripts/base_image.sh
DOCKER="${DOCKER:-$(command -v /usr/bin/docker || command -v docker)}"
CA="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
SECRET=()
[ -f "$CA" ] && SECRET=(--secret "id=pip_ca,src=$CA")
TAG="mnist-serve:gpu-check"
started=$(date +%s)
DOCKER_BUILDKIT=1 "$DOCKER" build --network host "${SECRET[@]}" \
  --build-arg BASE_IMAGE=mnist-serve-base:bookworm-py3.11 --build-arg DEVICE=gpu \
  --target serve -t "$TAG" .
echo "built in $(( $(date +%s) - started )) s; size: $("$DOCKER" image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.2f GB", $1/1e9}')"
"$DOCKER" run --rm --network none "$TAG" python -c "
from importlib import metadata
import onnxruntime as ort
import tensorflow as tf
info = tf.sysconfig.get_build_info()
assert tf.test.is_built_with_cuda(), 'TensorFlow without CUDA'
print('TensorFlow', tf.__version__, '| CUDA', info['cuda_version'], '| cuDNN', info['cudnn_version'],
      '| GPUs visible:', tf.config.list_physical_devices('GPU') or 'none (no GPU here)')
providers = ort.get_available_providers()
assert 'CUDAExecutionProvider' in providers, f'ONNX Runtime without CUDA: {providers}'
print('onnxruntime-gpu', metadata.version('onnxruntime-gpu'), '| providers:', ', '.join(providers))
"
"$DOCKER" rmi "$TAG" >/dev/null
