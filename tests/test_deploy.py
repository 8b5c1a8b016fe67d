"""Deployment files: checked here without Docker or a cluster (neither runs on this machine)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

K8S = REPO / "deploy" / "k8s"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it is a dev dependency (pip install -e '.[dev]')")
    return found


def test_hadolint_passes_on_the_dockerfile() -> None:
    done = subprocess.run(
        [tool("hadolint"), "Dockerfile"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_runs_as_non_root_with_a_readiness_healthcheck() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)
    runtime = next(s for s in stages if s.startswith("base AS runtime"))
    assert re.search(r"^USER 10001:10001$", runtime, re.M)  # numeric: runAsNonRoot can verify it
    assert "HEALTHCHECK" in runtime and "/readyz" in runtime
    assert re.search(r"^EXPOSE 8000$", runtime, re.M)
    assert "MNIST_SERVE_HOST=0.0.0.0" in runtime
    # The default (last) stage serves with mounted models; a target bakes them in.
    assert stages[-1].startswith("runtime AS serve")
    assert any(s.startswith("runtime AS baked") for s in stages)
    assert "ARG DEVICE=gpu" in text and "tensorflow[and-cuda]" in text


def k8s_resources() -> list[Path]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [K8S / name for name in kustomization["resources"]]


def test_kustomization_lists_every_manifest() -> None:
    listed = {p.name for p in k8s_resources()}
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_k8s_manifests_validate_against_the_kubernetes_schemas() -> None:
    done = subprocess.run(
        [tool("kubernetes-validate"), "--strict", *map(str, k8s_resources())],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_k8s_deployment_requests_a_gpu_and_probes_health() -> None:
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/models"}
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    locust = list(yaml.safe_load_all((K8S / "locust.yaml").read_text()))
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in locust}
    assert {("Deployment", "locust-master"), ("Deployment", "locust-worker")} <= kinds


def test_k8s_locust_runs_the_load_test_image_not_the_serving_one() -> None:
    """The serving image has no Locust (the Dockerfile's ``base`` installs the service's
    dependencies only): the Locust pods name the image built from the ``loadtest`` target."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    tags = {image["name"]: image["newTag"] for image in kustomization["images"]}
    locust = list(yaml.safe_load_all((K8S / "locust.yaml").read_text()))
    deployments = [doc for doc in locust if doc["kind"] == "Deployment"]
    images = {c["image"] for d in deployments for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"mnist-serve-loadtest"} and tags["mnist-serve-loadtest"] == "loadtest"
    assert "FROM base AS loadtest" in (REPO / "Dockerfile").read_text()


def test_compose_reserves_a_gpu_and_scales_locust_workers() -> None:
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    serve = services["mnist-serve"]
    device = serve["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "8000:8000" in serve["ports"] and any("/models" in v for v in serve["volumes"])
    assert "profiles" not in serve
    for name in ("locust-master", "worker"):
        assert services[name]["profiles"] == ["loadtest"]
    assert "--master" in services["locust-master"]["command"]
    assert "http://mnist-serve:8000" in services["locust-master"]["command"]
    worker = services["worker"]
    assert "--worker" in worker["command"] and "locust-master" in worker["command"]
    assert "container_name" not in worker and "ports" not in worker  # so --scale worker=N works


def test_readme_deploy_commands_name_files_that_exist() -> None:
    readme = (REPO / "README.md").read_text()
    deploy = readme[readme.index("## Deploy") :]
    for path in ("scripts/container_smoke.sh", "deploy/k8s", "compose.yaml"):
        assert path in deploy and (REPO / path).exists()
    assert "docker run --gpus all -p 8000:8000" in deploy
    assert "--scale worker=" in deploy and "kubectl apply -k deploy/k8s" in deploy


def test_smoke_script_is_valid_bash() -> None:
    done = subprocess.run(
        ["bash", "-n", "scripts/container_smoke.sh"], cwd=REPO, capture_output=True
    )
    assert done.returncode == 0, done.stderr
