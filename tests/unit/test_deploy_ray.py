"""The Ray recipes (deploy/ray): real commands, valid projects, the work dir shared at one path."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import tomllib

from alloop.config import parse_config
from tests.unit.test_deploy import DEPLOY, _check_alloop_command, _known_env, _yaml

RAY = DEPLOY / "ray"
ROOT = DEPLOY.parent


def _ray_version_of_image() -> str:
    text = (RAY / "Dockerfile").read_text()
    return re.search(r"^ARG RAY_IMAGE=rayproject/ray:([0-9.]+)-py311-cpu$", text, re.M).group(1)


def test_dockerfile_installs_the_ray_extra_at_the_images_ray_version():
    text = (RAY / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY"):
            for src in [a for a in shlex.split(line)[1:-1] if not a.startswith("--")]:
                assert (ROOT / src).exists(), src
    extras = re.search(r'pip install "\.\[([a-z,]+)\]"', text).group(1).split(",")
    assert "ray" in extras
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras) <= set(pyproject), set(extras) - set(pyproject)
    assert any(dep.startswith("ray[data,client]") for dep in pyproject["ray"])
    version = _ray_version_of_image()
    assert f'"ray[data,client]=={version}"' in text  # pip must not move Ray off the image's version
    torch = re.search(r"^TORCH\s+\?= (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert torch in text


def _mounts(volumes: list[str]) -> dict[str, str]:
    return {v.split(":")[1]: v.split(":")[0] for v in volumes}


def test_compose_runs_head_workers_and_a_driver_on_one_shared_volume():
    (compose,) = _yaml(RAY / "docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"ray-head", "ray-worker", "alloop"}
    assert set(compose["volumes"]) == {"work"}
    for name, service in services.items():
        build = service["build"]
        assert (RAY / build["context"] / build["dockerfile"]).resolve() == RAY / "Dockerfile", name
        mounts = _mounts(service["volumes"])
        assert mounts["/srv/alloop/work"] == "work" and mounts["/data/pools"] == "./pools", name
    head, worker = services["ray-head"]["command"], services["ray-worker"]["command"]
    assert head[:3] == ["ray", "start", "--head"] and "--block" in head
    assert head[head.index("--port") + 1] == "6379" and head[head.index("--ray-client-server-port") + 1] == "10001"
    assert worker[worker.index("--address") + 1] == "ray-head:6379" and "--block" in worker
    assert services["ray-head"]["healthcheck"]["test"][1:3] == ["ray", "status"]

    bash, flag, script = services["alloop"]["command"]
    assert (bash, flag) == ("bash", "-c")
    join, run = script.split(" && exec ")
    assert shlex.split(join)[:4] == ["ray", "start", "--address", "ray-head:6379"] and "--num-cpus" in join
    argv = shlex.split(run)
    _check_alloop_command(argv)
    project_dir = argv[argv.index("--project") + 1]
    assert _mounts(services["alloop"]["volumes"])[project_dir] == "./project"
    assert services["alloop"]["init"] is True


def test_compose_example_project_runs_on_the_cluster_it_joins():
    config = parse_config(tomllib.loads((RAY / "alloop.example.toml").read_text()))
    assert config.execution.backend == "ray" and config.execution.address == "auto"
    assert config.project.work_dir.is_relative_to("/srv/alloop/work")  # on the shared volume
    assert Path(config.pool.source.path).is_relative_to("/data/pools")


def _pod(template: dict) -> tuple[dict, dict[str, str], dict[str, dict]]:
    spec = template["spec"]
    (container,) = spec["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert set(mounts.values()) <= set(volumes)
    return container, mounts, volumes


def test_kuberay_cluster_and_driver_share_the_work_volume_and_the_image():
    docs = _yaml(RAY / "kuberay.yaml")
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "ConfigMap", "RayCluster", "Deployment", "Service"]
    pvc, configmap, cluster, deployment, service = docs
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["spec"]["rayVersion"] == _ray_version_of_image()
    head = cluster["spec"]["headGroupSpec"]
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())  # KubeRay wants strings
    templates = [head["template"]] + [g["template"] for g in cluster["spec"]["workerGroupSpecs"]]
    images = set()
    for template in [*templates, deployment["spec"]["template"]]:
        container, mounts, volumes = _pod(template)
        images.add(container["image"])
        assert volumes[mounts["/srv/alloop/work"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        assert "/data/pools" in mounts
    assert len(images) == 1  # one image, one Ray version for driver and cluster

    project = parse_config(tomllib.loads(configmap["data"]["alloop.toml"]))
    head_svc = f"{cluster['metadata']['name']}-head-svc"  # the Service KubeRay creates for the head
    assert project.execution.backend == "ray" and project.execution.address == f"ray://{head_svc}:10001"
    assert project.project.work_dir.is_relative_to("/srv/alloop/work")
    client_port = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert client_port["client"] == 10001

    container, mounts, volumes = _pod(deployment["spec"]["template"])
    argv = [*container["command"], *container["args"]]
    _check_alloop_command(argv)
    assert volumes[mounts[argv[argv.index("--project") + 1]]]["configMap"]["name"] == configmap["metadata"]["name"]
    _known_env({e["name"] for e in container.get("env", [])}, "alloop-ray-serve")
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]


def test_rayjob_runs_alloop_on_the_cluster_head_where_the_project_is_mounted():
    (job,) = _yaml(RAY / "rayjob.yaml")
    cluster = next(d for d in _yaml(RAY / "kuberay.yaml") if d["kind"] == "RayCluster")
    assert job["kind"] == "RayJob" and job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    argv = shlex.split(job["spec"]["entrypoint"])
    _check_alloop_command(argv)
    _, head_mounts, _ = _pod(cluster["spec"]["headGroupSpec"]["template"])
    assert argv[argv.index("--project") + 1] in head_mounts


def test_ray_readme_commands_and_variables_exist():
    main = (ROOT / "README.md").read_text()
    section = main[main.index("## Pools beyond one machine"):]
    readme = (RAY / "README.md").read_text() + section[: section.index("\n## ", 3)]
    _known_env(set(re.findall(r"\b(ALLOOP_[A-Z_]+)", readme)), "deploy/ray/README.md")
    commands = re.findall(r"(?:^|exec \S+ |-- )(alloop [a-z]+ [^\n`|#]*)", readme, re.M)
    assert len(commands) >= 2, commands
    for cmd in commands:
        _check_alloop_command(shlex.split(cmd))
    for link in re.findall(r"\]\(([^)#]+)\)", (RAY / "README.md").read_text()):
        if not link.startswith("http"):
            assert (RAY / link).exists(), link
