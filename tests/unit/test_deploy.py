"""The deploy recipes name only commands, options, variables and paths that exist."""

from __future__ import annotations

import configparser
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
