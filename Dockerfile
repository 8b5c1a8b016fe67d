# mnist-serve container image (BuildKit: DOCKER_BUILDKIT=1, the default in Docker 23+).
#
#   GPU (default):  docker build -t mnist-serve:gpu .
#   CPU only:       docker build --build-arg DEVICE=cpu -t mnist-serve:cpu .
#   Locust image:   docker build --build-arg DEVICE=cpu --target loadtest -t mnist-serve:loadtest .
#   models baked in (trained during the build, MNIST from the build context):
#                   mkdir -p .docker && cp ../shared/data/mnist/mnist.npz .docker/
#                   docker build --target baked --build-arg EPOCHS=12 -t mnist-serve:baked .
#
# No image registry?  scripts/base_image.sh builds the same base from Debian packages:
#                   docker build --build-arg BASE_IMAGE=mnist-serve-base:bookworm-py3.11 ...
# Behind a TLS-intercepting proxy?  Give pip the proxy's CA bundle as a BuildKit secret (never
# stored in a layer), and the host's network if the proxy is only reachable from there:
#                   docker build --network host \
#                       --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt ...
#
# No "# syntax=" line: the builder's built-in Dockerfile frontend (which has RUN --mount) is
# used, so building never needs to pull a frontend image.
#
# Base: a Python 3.11 slim image plus TensorFlow's own CUDA wheels (tensorflow[and-cuda]) rather
# than the tensorflow/tensorflow:*-gpu image: the CUDA and cuDNN versions are then exactly the ones
# TensorFlow 2.21 was built against, and the CPU image is the same file minus the NVIDIA wheels.
# The host needs only the NVIDIA driver and the NVIDIA container toolkit (docker run --gpus ...).

ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS base
ARG DEVICE=gpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
# Dependencies first, from pyproject.toml alone, so code changes do not reinstall TensorFlow.
# Only the serving dependencies: Locust, matplotlib and scipy are the [loadtest] extra.
# On a GPU, ONNX Runtime is onnxruntime-gpu (the CUDA execution provider, CUDA 12 and cuDNN 9
# from the same NVIDIA wheels as TensorFlow) in place of the CPU onnxruntime: the two share one
# import package, so the build fails if anything brings the CPU one back.
COPY pyproject.toml ./
RUN --mount=type=secret,id=pip_ca,required=false \
    --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && if [ "$DEVICE" = "gpu" ]; then \
         echo "tensorflow[and-cuda]==2.21.*" >> /tmp/requirements.txt \
         && sed -i 's/^onnxruntime\([<>=~! ]\)/onnxruntime-gpu\1/' /tmp/requirements.txt; \
       fi \
    && pip install -r /tmp/requirements.txt \
    && if [ "$DEVICE" = "gpu" ] && pip show --quiet onnxruntime; then \
         echo "the CPU onnxruntime is installed beside onnxruntime-gpu" >&2; exit 1; \
       fi \
    && rm /tmp/requirements.txt
COPY README.md ./
COPY mnist_serve ./mnist_serve
COPY modelrepo ./modelrepo
COPY training ./training
COPY service ./service
COPY loadtests ./loadtests
RUN --mount=type=secret,id=pip_ca,required=false \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && pip install --no-cache-dir --no-deps . \
    && useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin app \
    && mkdir -p /models && chown app:app /models

FROM base AS trainer
ARG EPOCHS=2
# MNIST from the build context (.docker/mnist.npz) when there; else Keras downloads it.
RUN --mount=type=bind,source=.,target=/context \
    if [ -f /context/.docker/mnist.npz ]; then export MNIST_DATA=/context/.docker/mnist.npz; fi \
    && mnist-serve train original depthwise --epochs "${EPOCHS}" --models /models

FROM base AS runtime
USER 10001:10001
# 0.0.0.0 inside the container's own network namespace; with --network host, set
# MNIST_SERVE_HOST=127.0.0.1 so the service listens on the host's loopback only.
ENV MNIST_SERVE_HOST=0.0.0.0 \
    MNIST_SERVE_PORT=8000 \
    MNIST_SERVE_MODELS_DIR=/models \
    MNIST_SERVE_DEVICE=auto
EXPOSE 8000
# Ready means every model is loaded and warm; python is there, curl is not. The port comes from
# the same variable the service reads, so a changed port keeps the check right.
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('MNIST_SERVE_PORT', '8000')}/readyz\", timeout=2)"]
# One process per container, one container per GPU: the process owns its models and its GPU.
# docker stop sends SIGTERM: uvicorn finishes in-flight requests and exits (10 s grace inside).
CMD ["mnist-serve", "serve"]

FROM runtime AS baked
COPY --from=trainer --chown=app:app /models /models

# Locust master/workers for compose's load-test profile: the serving image plus [loadtest].
FROM base AS loadtest
RUN --mount=type=secret,id=pip_ca,required=false \
    --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['loadtest']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
USER 10001:10001

# The default target: models mounted at run time (-v ./models:/models:ro).
FROM runtime AS serve
