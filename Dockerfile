# syntax=docker/dockerfile:1.7
# mnist-serve container image.
#
#   GPU (default):  docker build -t mnist-serve:gpu .
#   CPU only:       docker build --build-arg DEVICE=cpu -t mnist-serve:cpu .
#   models baked in (trained during the build):
#                   docker build --target baked --build-arg EPOCHS=12 \
#                       --build-context mnist=../shared/data/mnist -t mnist-serve:baked .
#
# Base: python:3.11-slim plus TensorFlow's own CUDA wheels (tensorflow[and-cuda]) rather than
# the tensorflow/tensorflow:*-gpu image: the CUDA and cuDNN versions are then exactly the ones
# TensorFlow 2.21 was built against, Python is the 3.11 the project targets, and the CPU image
# is the same file minus the NVIDIA wheels. The host needs only the NVIDIA driver and the
# NVIDIA container toolkit (docker run --gpus ...), which inject the driver libraries.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS base
ARG DEVICE=gpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /app
# Dependencies first, from pyproject.toml alone, so code changes do not reinstall TensorFlow.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && if [ "$DEVICE" = "gpu" ]; then echo "tensorflow[and-cuda]==2.21.*" >> /tmp/requirements.txt; fi \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
COPY README.md ./
COPY mnist_serve ./mnist_serve
COPY modelrepo ./modelrepo
COPY training ./training
COPY service ./service
COPY loadtests ./loadtests
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin app \
    && mkdir -p /models && chown app:app /models

# Optional MNIST for the training stage: --build-context mnist=<folder with mnist.npz>.
# Without it the build downloads MNIST with Keras (needs internet).
FROM scratch AS mnist

FROM base AS trainer
ARG EPOCHS=2
RUN --mount=type=bind,from=mnist,target=/mnist \
    if [ -f /mnist/mnist.npz ]; then export MNIST_DATA=/mnist/mnist.npz; fi \
    && mnist-serve train original depthwise --epochs "${EPOCHS}" --models /models

FROM base AS runtime
USER 10001:10001
ENV MNIST_SERVE_HOST=0.0.0.0 \
    MNIST_SERVE_PORT=8000 \
    MNIST_SERVE_MODELS_DIR=/models \
    MNIST_SERVE_DEVICE=auto
EXPOSE 8000
# Ready means every model is loaded and warm; python is there, curl is not.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
# One process per container, one container per GPU: the process owns its models and its GPU.
CMD ["mnist-serve", "serve"]

FROM runtime AS baked
COPY --from=trainer --chown=app:app /models /models

# The default target: models mounted at run time (-v ./models:/models:ro).
FROM runtime AS serve
