"""The CPU image, built and run for real: health, predictions, device, non-root user, read-only
root file system, graceful stop. Needs root (it installs and starts the Docker engine if it is
missing) and the package registries (pip inside the build); builds its base image from Debian
packages, since no image registry is reachable here. ``make container-test`` runs just this.

Time: the base image ~1.5 min once (kept between runs, like the builder's pip cache), the CPU
image 3-6 min (TensorFlow and the runtimes), the checks ~1 min.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from loadtests.procs import free_port
from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.container]

BASE_IMAGE = "mnist-serve-base:bookworm-py3.11"
STOP_GRACE_S = 20
CA_BUNDLE = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"


BUILDKIT = {**os.environ, "DOCKER_BUILDKIT": "1"}


def docker_command() -> str:
    """A docker client whose ``build`` has BuildKit: ``docker`` (with buildx) or Debian's."""
    for candidate in ("docker", "/usr/bin/docker"):
        found = shutil.which(candidate)
        if (
            found
            and subprocess.run(
                [found, "build", "--help"],
                capture_output=True,
                env=BUILDKIT,
            ).returncode
            == 0
        ):
            return found
    pytest.fail("no docker client with BuildKit (install docker.io or docker-buildx)")


def run(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A command, its output captured; fails the test with its output if it fails."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=BUILDKIT)
    if check and done.returncode != 0:
        output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        pytest.fail(f"{' '.join(args[:3])}... exit {done.returncode}:\n{output}")
    return done


@pytest.fixture(scope="module")
def image() -> Iterator[tuple[str, str, float]]:
    """The CPU image built from this checkout (removed afterwards; the base image is kept)."""
    run("bash", str(REPO / "scripts" / "docker_engine.sh"), timeout=600)
    run("bash", str(REPO / "scripts" / "base_image.sh"), timeout=900)
    docker = docker_command()
    tag = f"mnist-serve:cpu-test-{os.getpid()}"
    secret = ["--secret", f"id=pip_ca,src={CA_BUNDLE}"] if Path(CA_BUNDLE).is_file() else []
    started = time.perf_counter()
    run(
        docker,
        "build",
        "--network",
        "host",
        *secret,
        "--build-arg",
        f"BASE_IMAGE={BASE_IMAGE}",
        "--build-arg",
        "DEVICE=cpu",
        "--target",
        "serve",
        "-t",
        tag,
        str(REPO),
        timeout=2400,
    )
    built_s = time.perf_counter() - started
    try:
        yield docker, tag, built_s
    finally:
        run(docker, "rmi", "-f", tag, check=False)


@pytest.fixture(scope="module")
def readable_models(models_dir: Path) -> Iterator[Path]:
    """The quick models copied where the container's user (uid 10001) can read them."""
    folder = Path(tempfile.mkdtemp(prefix="mnist-serve-container-"))
    shutil.copytree(models_dir, folder / "models")
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield folder / "models"
    shutil.rmtree(folder, ignore_errors=True)


def png_of_a_one() -> bytes:
    """A '1' drawn dark on light, as a user's upload would be."""
    pixels = np.full((64, 64), 255, dtype=np.uint8)
    pixels[10:54, 28:36] = 0
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_cpu_image_serves_and_stops_gracefully(
    image: tuple[str, str, float], readable_models: Path
) -> None:
    """Run it as the Kubernetes manifest asks (read-only root, non-root user), on the host's
    loopback only, wait for the HEALTHCHECK, use it, then stop it."""
    docker, tag, built_s = image
    port = free_port()
    name = f"mnist-serve-test-{os.getpid()}"
    started = time.perf_counter()
    run(
        docker,
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "-e",
        "MNIST_SERVE_HOST=127.0.0.1",
        "-e",
        f"MNIST_SERVE_PORT={port}",
        "-v",
        f"{readable_models}:/models:ro",
        tag,
    )
    try:
        health = ""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and health != "healthy":
            time.sleep(1)
            health = run(docker, "inspect", "-f", "{{.State.Health.Status}}", name).stdout.strip()
            assert health in ("starting", "healthy"), run(docker, "logs", name).stderr[-3000:]
        healthy_s = time.perf_counter() - started
        assert health == "healthy", run(docker, "logs", name).stderr[-3000:]
        url = f"http://127.0.0.1:{port}"
        ready = httpx.get(f"{url}/readyz")
        by_json = httpx.post(
            f"{url}/predict/depthwise", json={"image": [0.0] * 300 + [1.0] * 184 + [0.0] * 300}
        )
        by_png = httpx.post(
            f"{url}/predict/original", content=png_of_a_one(), headers={"content-type": "image/png"}
        )
        variants = httpx.get(f"{url}/variants").json()
        uid = run(docker, "exec", name, "id", "-u").stdout.strip()
        write = run(docker, "exec", name, "touch", "/app/written", check=False)
        settings = json.loads(run(docker, "inspect", name).stdout)[0]
        stop_started = time.perf_counter()
        run(docker, "stop", "-t", str(STOP_GRACE_S), name, timeout=STOP_GRACE_S + 30)
        stop_s = time.perf_counter() - stop_started
        state = json.loads(run(docker, "inspect", name).stdout)[0]["State"]
        logs = run(docker, "logs", name).stderr
    finally:
        run(docker, "rm", "-f", name, check=False)
    assert ready.status_code == 200, ready.text
    assert by_json.status_code == 200 and by_json.json()["predictions"][0]["digit"] in range(10)
    assert by_png.status_code == 200 and by_png.json()["predictions"][0]["digit"] == 1
    assert {v["device"] for v in variants} == {"/CPU:0"}, variants
    assert uid == "10001"
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    assert settings["HostConfig"]["ReadonlyRootfs"] is True
    assert settings["HostConfig"]["NetworkMode"] == "host"
    assert stop_s < STOP_GRACE_S and state["ExitCode"] == 0, (stop_s, state, logs[-2000:])
    assert "Finished server process" in logs
    print(
        f"\nCPU image: built in {built_s:.0f} s, healthy {healthy_s:.1f} s after docker run, "
        f"stopped in {stop_s:.1f} s"
    )
