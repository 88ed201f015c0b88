"""The deploy recipes name only commands, options, variables and paths that exist."""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path

from typer.main import get_command

from alloop.cli.main import app
from alloop.config import ENV

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _unit(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=True, interpolation=None)
    cp.optionxform = str
    cp.read_string(path.read_text())
    return cp


def _check_alloop_command(argv: list[str]) -> None:
    assert Path(argv[0]).name == "alloop"
    cli = get_command(app)
    i = 1
    while argv[i].startswith("-"):
        assert argv[i] in {o for p in cli.params for o in p.opts}, argv[i]
        i += 1
    sub = cli.commands[argv[i]]  # KeyError if the command does not exist
    opts = {o for p in sub.params for o in p.opts}
    for a in argv[i + 1:]:
        if a.startswith("-"):
            assert a in opts, f"{a} is not an option of `alloop {argv[i]}`"


def test_systemd_units_parse_and_name_real_commands():
    service = _unit(DEPLOY / "systemd" / "alloop-run@.service")
    assert service["Service"]["Type"] == "oneshot"
    _check_alloop_command(shlex.split(service["Service"]["ExecStart"]))
    timer = _unit(DEPLOY / "systemd" / "alloop-run@.timer")
    assert timer["Timer"]["OnUnitActiveSec"] and timer["Install"]["WantedBy"] == "timers.target"


def test_env_example_and_readme_use_known_variables():
    env = (DEPLOY / "systemd" / "alloop.env.example").read_text()
    readme = (DEPLOY / "README.md").read_text()
    names = set(re.findall(r"\b(ALLOOP_[A-Z_]+)", env + readme))
    assert names and names <= set(ENV), names - set(ENV)


def test_cron_line_names_a_real_command():
    readme = (DEPLOY / "README.md").read_text()
    line = next(x for x in readme.splitlines() if x.startswith("*/10"))
    cmd = line.split("&&", 1)[1].split(">>")[0]
    _check_alloop_command(shlex.split(cmd))


# --- alloop serve recipes: docker compose, Dockerfile, Kubernetes, systemd ----------------------
def _yaml(path: Path) -> list:
    import yaml

    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _known_env(names: set[str], where: str) -> None:
    ours = {n for n in names if n.startswith(("ALLOOP_", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"))}
    assert ours <= set(ENV), f"{where}: {sorted(ours - set(ENV))} are not variables alloop reads"


def _env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {k: v for k, v in pairs}


def test_docker_compose_runs_label_studio_postgres_and_alloop_serve():
    compose_file = DEPLOY / "docker" / "docker-compose.yml"
    (compose,) = _yaml(compose_file)
    services = compose["services"]
    assert set(services) == {"db", "labelstudio", "alloop"}
    alloop = services["alloop"]
    _check_alloop_command(["alloop", *alloop["command"]])
    assert alloop["command"][0] == "serve" and "--public-url" in alloop["command"]
    build = alloop["build"]
    dockerfile = (compose_file.parent / build["context"] / build["dockerfile"]).resolve()
    assert dockerfile == (DEPLOY / "docker" / "Dockerfile")
    env_example = _env_file(DEPLOY / "docker" / alloop["env_file"].replace(".env", ".env.example"))
    _known_env(set(alloop["environment"]) | set(env_example), "docker compose")
    assert "ALLOOP_WEBHOOK_SECRET" in env_example and alloop["environment"]["ALLOOP_DATABASE_URL"].startswith("postgresql+psycopg://")
    # every ${VAR} the file interpolates is defined in the example env file
    used = set(re.findall(r"\$\{([A-Z_]+)", compose_file.read_text()))
    assert used <= set(env_example), used - set(env_example)
    for service in services.values():  # bind mounts name folders that ship (or that the README creates)
        for vol in service.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./") and src not in ("./project", "./pools"):
                assert (DEPLOY / "docker" / src).exists(), src
    assert (services["labelstudio"]["environment"]["LABEL_STUDIO_USER_TOKEN"]
            == "${LABEL_STUDIO_API_KEY:?set LABEL_STUDIO_API_KEY in alloop.env}")


def test_dockerfile_copies_what_exists_and_starts_serve():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    root = DEPLOY.parent
    for line in text.splitlines():
        if line.startswith("COPY"):
            for src in shlex.split(line)[1:-1]:
                assert (root / src).exists(), src
    extras = re.search(r'pip install "\.\[([a-z,]+)\]"', text).group(1).split(",")
    pyproject = (root / "pyproject.toml").read_text()
    for extra in extras:
        assert re.search(rf"^{extra} = \[", pyproject, re.M), f"extra {extra!r} is not in pyproject.toml"
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))
    _check_alloop_command([*entry, *cmd])
    assert "torch==2.14.1" in text and "/healthz" in text


def test_kubernetes_manifests_name_real_commands_volumes_and_a_valid_project():
    import tomllib

    from alloop.config import parse_config

    docs = _yaml(DEPLOY / "kubernetes" / "serve-deployment.yaml") + _yaml(DEPLOY / "kubernetes" / "run-cronjob.yaml")
    kinds = [d["kind"] for d in docs]
    assert kinds == ["ConfigMap", "PersistentVolumeClaim", "Deployment", "Service", "CronJob"]
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    parse_config(tomllib.loads(config["data"]["alloop.toml"]))  # the project it mounts is valid
    deploy = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    cron = next(d for d in docs if d["kind"] == "CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    for pod, sub in ((deploy, "serve"), (cron, "run")):
        (container,) = pod["containers"]
        args = container["args"]
        assert args[0] == sub
        _check_alloop_command(["alloop", *args])
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert {m for m in mounts.values()} <= {v["name"] for v in pod["volumes"]}
        assert args[args.index("--project") + 1] in mounts  # the project folder is the mounted ConfigMap
        _known_env({e["name"] for e in container.get("env", [])}, f"{sub} container")
    assert deploy["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/healthz"
    (secret,) = _yaml(DEPLOY / "kubernetes" / "secret.example.yaml")
    _known_env(set(secret["stringData"]), "secret.example.yaml")


def test_systemd_serve_unit_and_env_example():
    service = _unit(DEPLOY / "systemd" / "alloop-serve@.service")
    assert service["Service"]["Type"] == "simple" and service["Service"]["KillSignal"] == "SIGTERM"
    _check_alloop_command(shlex.split(service["Service"]["ExecStart"]))
    names = set(re.findall(r"\b([A-Z][A-Z_]+)=", (DEPLOY / "systemd" / "alloop.env.example").read_text()))
    _known_env(names, "alloop.env.example")
