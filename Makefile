# The two commands of the README, and the environment they share.
# `make demo` runs the main job; `make test` runs lint, types and tests. Both create
# (or reuse) .venv from pyproject.toml, so a fresh machine needs only Python 3.11 and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# MNIST without a download: the team's shared copy beside the clone, unless MNIST_DATA says
# otherwise (the loader downloads it only when neither is there).
SHARED_MNIST := $(abspath ../shared/data/mnist/mnist.npz)
ifeq ($(MNIST_DATA),)
ifneq ($(wildcard $(SHARED_MNIST)),)
export MNIST_DATA := $(SHARED_MNIST)
endif
endif

.PHONY: demo test test-fast bench bench-models bench-peers bench-memory bench-metrics profile wrk h2load nginx bench-protocols bench-overload bench-overload-mosec bench-refusal bench-http-path bench-startup container-test container-gpu-check env browser clean

env: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The demo trains and serves on the CPU unless asked (DEVICE=auto: a GPU when one is visible;
# DEVICE=gpu: a GPU or a clear error), so its figures mean the same on every machine.
DEVICE ?= cpu
demo: $(STAMP)
	$(if $(filter cpu,$(DEVICE)),CUDA_VISIBLE_DEVICES=-1 )MNIST_SERVE_DEVICE=$(DEVICE) $(BIN)/mnist-serve demo

# The browser tests drive Debian's Chromium (no downloaded browser builds): install it if missing.
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) browser wrk h2load nginx
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

# Build the CPU image (base from Debian packages, no registry needed) and check it for real.
container-test: $(STAMP)
	$(BIN)/pytest -m container -s

# Build the GPU image and check its TensorFlow has CUDA (no GPU needed; ~3 min, ~7 GB).
container-gpu-check:
	bash scripts/gpu_image_check.sh

# Benchmarks (docs/benchmarks.md): need models/ (make demo trains them) and wrk for `bench`.
bench: $(STAMP) wrk
	$(BIN)/python scripts/bench_service.py

bench-models: $(STAMP)
	$(BIN)/python scripts/bench_models.py

# wrk, Debian's, for the HTTP benchmarks: installed if missing.
wrk:
	@command -v wrk >/dev/null || { \
	  echo "installing Debian's wrk for the benchmarks"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

# h2load (Debian's nghttp2-client), the gRPC load generator of bench-protocols: installed if missing.
h2load:
	@command -v h2load >/dev/null || { \
	  echo "installing Debian's nghttp2-client (h2load) for the benchmarks"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null; }

# nginx (Debian's nginx-light), the native front of `bench_overload.py --servers nginx`
# (loadtests/front.py) and its tests: installed if missing. Never part of the service. Debian
# starts and enables its system nginx (port 80) where systemd runs: that one is stopped.
nginx:
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { \
	  echo "installing Debian's nginx-light for the overload benchmark's native front"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null; \
	  ! command -v systemctl >/dev/null || systemctl disable --now nginx >/dev/null 2>&1 || true; }

# Ours (its default engine, the executor, one process, replicas) against mosec (a peer engine)
# and the HTTP floor on the same model.onnx; installs the peers extra (mosec) into .venv if missing.
bench-peers: $(STAMP) wrk
	@$(BIN)/python -c "import mosec" 2>/dev/null || $(BIN)/pip install --quiet -e '.[peers]'
	$(BIN)/python scripts/bench_peers.py --models models --engines default,executor,single,replicas \
	    --out runs/bench-peers.json $(CPU_SPLIT)

# How long a server takes to be ready, and its memory, without TensorFlow (ONNX alone) and with.
bench-startup: $(STAMP)
	$(BIN)/python scripts/bench_startup.py --models models

# The memory of each engine design against one process serving the same models.
bench-memory: $(STAMP)
	$(BIN)/python scripts/bench_memory.py --models models --out runs/bench-memory.json

# What counting one request costs: prometheus-client's observe() against the service's tallies.
bench-metrics: $(STAMP)
	$(BIN)/python scripts/bench_metrics.py

# Where one front end's CPU goes per request at c=32, against the floor (py-spy samples).
profile: $(STAMP) wrk
	@test -x $(BIN)/py-spy || $(BIN)/pip install --quiet py-spy
	PATH="$(BIN):$$PATH" $(BIN)/python scripts/profile_frontend.py --models models

# The HTTP request path's CPU in process: inference answered by our protocol against ASGI.
bench-http-path: $(STAMP)
	$(BIN)/python scripts/bench_http_path.py --models models

# CPU_SPLIT="--server-cpus 0 --load-cpus 1" keeps the load generator off the server's CPU (also
# for bench-peers).
bench-overload: $(STAMP) wrk
	$(BIN)/python scripts/bench_overload.py --out runs/bench-overload.json $(CPU_SPLIT)

# The same overload against the peer: ours and mosec on the same model.onnx, each loaded at
# multiples of its own capacity; installs the peers extra (mosec) into .venv if missing.
bench-overload-mosec: $(STAMP) wrk
	@$(BIN)/python -c "import mosec" 2>/dev/null || $(BIN)/pip install --quiet -e '.[peers]'
	$(BIN)/python scripts/bench_overload.py --model depthwise@onnx --servers defaults,resends,mosec \
	    --out runs/bench-overload-mosec.json $(CPU_SPLIT)

# What one refusal costs the server's core against one served request, ours and nginx's, and the
# goodput at 4x overload those costs allow on that core (the server on CPU 0, the load on CPU 1).
bench-refusal: $(STAMP) wrk nginx
	$(BIN)/python scripts/bench_refusal.py --models models --server-cpus 0 --load-cpus 1

# Every protocol (native, TF Serving, KServe V2 JSON/binary/gRPC) against /predict on one server,
# wrk for HTTP and h2load for gRPC (issue 21: none more than 15 % below /predict).
bench-protocols: $(STAMP) wrk h2load
	$(BIN)/python scripts/bench_protocols.py --models models --out runs/bench-protocols.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
