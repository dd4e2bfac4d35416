"""The deployment files parse, the `ray up` file passes Ray's own validation, the KubeRay manifests
are what KubeRay expects, and the cluster tutorial's commands (docs/tutorials/cluster.md) are commands medtune
accepts."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import ray
import yaml

from medtune.cluster.cli.main import _parser

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "cluster" / "ops" / "deploy"


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def test_ray_up_file_passes_rays_config_validation():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load("ray-up-gpu.yaml")
    validate_config(prepare_config(copy.deepcopy(config)))
    # CPU head, autoscaling GPU workers, medtune installed on every node, token auth on
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"]["GPU"] == 0
    gpu = [t for name, t in types.items() if name != config["head_node_type"]]
    assert gpu and all(t["resources"]["GPU"] >= 1 and t["min_workers"] < t["max_workers"] for t in gpu)
    assert any("-e ~/medtune" in c for c in config["setup_commands"])
    start = " ".join(config["head_start_ray_commands"] + config["worker_start_ray_commands"])
    assert start.count("RAY_AUTH_MODE=token") == 2 and "--dashboard-host=127.0.0.1" in start


def test_ray_up_validation_rejects_a_broken_file():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load("ray-up-gpu.yaml")
    config["max_workers"] = "many"
    with pytest.raises(Exception, match="many"):
        validate_config(prepare_config(config))


def _containers(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"]] + spec["workerGroupSpecs"]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


@pytest.mark.parametrize("name, kind", [("kuberay-raycluster.yaml", "RayCluster"), ("kuberay-rayjob.yaml", "RayJob")])
def test_kuberay_manifests(name, kind):
    doc = load(name)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind and doc["metadata"]["name"]
    spec = doc["spec"] if kind == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert spec["rayVersion"] == ray.__version__  # the image's Ray must match the drivers'
    workers = spec["workerGroupSpecs"]
    assert any(c["resources"]["limits"].get("nvidia.com/gpu") for w in workers
               for c in w["template"]["spec"]["containers"])
    assert all(w["minReplicas"] <= w["maxReplicas"] for w in workers)
    for c in _containers(spec):
        env = {e["name"]: e["value"] for e in c["env"]}
        assert env["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN" not in env  # the token comes from a secret
    if kind == "RayJob":
        entry = shlex.split(doc["spec"]["entrypoint"])
        assert entry[0] == "medtune"
        args = _parser().parse_args(entry[1:])  # a command medtune accepts
        assert args.command == "run" and args.spec == "lr-schedulers"


def test_the_cluster_tutorials_commands_are_commands_medtune_accepts():
    section = (ROOT / "docs" / "tutorials" / "cluster.md").read_text()
    commands = [line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)
                for line in block.splitlines() if line.strip().startswith("medtune ")]
    assert len(commands) >= 6
    seen = set()
    for command in commands:
        args = _parser().parse_args(shlex.split(command)[1:])
        seen.add((args.command, getattr(args, "cluster_command", None) or getattr(args, "jobs_command", None)))
    # the ones the integration tests run for real (tests/test_service.py)
    assert {("cluster", "up"), ("submit", None), ("cluster", "status"), ("cluster", "down"), ("jobs", "list"),
            ("jobs", "logs")} <= seen
