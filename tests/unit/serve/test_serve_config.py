"""The [serve] section and the retrain rules of [loop]: validation with readable errors."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from alloop.config import ENV, load_config, parse_config
from alloop.errors import ConfigError
from alloop.serve.schedule import describe, make_trigger


def _serve(**serve):
    return parse_config({"project": {"name": "p"}, "serve": serve}).serve


def test_default_is_every_300_seconds():
    cfg = parse_config({"project": {"name": "p"}}).serve
    assert cfg.every_s == 300 and cfg.cron is None and describe(cfg) == "every 300 s"
    assert make_trigger(cfg).interval.total_seconds() == 300
    assert make_trigger(_serve(interval_s=2.5)).interval.total_seconds() == 2.5


def test_interval_and_cron_are_exclusive():
    with pytest.raises(ConfigError, match=r"serve: .*interval_s and cron are mutually exclusive"):
        _serve(interval_s=60, cron="*/5 * * * *")


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("61 * * * *", r"serve\.cron: .*61.*higher than the maximum"),
        ("* * *", r"serve\.cron: .*expected 5 fields"),
        ("0 7 * * 1-5", r"serve\.cron: .*day-of-week field with names"),
        ("0 7 * * fun", r"serve\.cron: .*invalid cron expression"),
    ],
)
def test_bad_cron_names_the_field(cron, message):
    with pytest.raises(ConfigError, match=message):
        _serve(cron=cron)


def test_cron_fires_on_the_named_days_in_its_time_zone():
    cfg = _serve(cron="30 7 * * mon-fri", timezone="Europe/Paris")
    assert cfg.every_s is None and describe(cfg) == 'cron "30 7 * * mon-fri" Europe/Paris'
    nxt = make_trigger(cfg).get_next_fire_time(None, datetime(2026, 1, 3, 12, tzinfo=timezone.utc))  # a Saturday
    assert nxt.strftime("%A %H:%M") == "Monday 07:30" and nxt.utcoffset().total_seconds() == 3600


def test_bad_timezone_and_interval_and_unknown_key():
    with pytest.raises(ConfigError, match=r"serve\.timezone: .*not an IANA time zone"):
        _serve(cron="* * * * *", timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match=r"serve\.interval_s: .*greater than 0"):
        _serve(interval_s=0)
    with pytest.raises(ConfigError, match=r"unknown field 'serve\.interval'; did you mean 'interval_s'"):
        _serve(interval=60)


def test_retrain_rules_are_validated():
    loop = parse_config({"project": {"name": "p"}, "loop": {"retrain_after_labels": 5, "retrain_after_s": 3600}}).loop
    assert (loop.retrain_after_labels, loop.retrain_after_s) == (5, 3600)
    with pytest.raises(ConfigError, match=r"loop\.retrain_after_labels: .*greater than or equal to 1"):
        parse_config({"project": {"name": "p"}, "loop": {"retrain_after_labels": 0}})
    with pytest.raises(ConfigError, match=r"loop\.retrain_after_s: .*greater than 0"):
        parse_config({"project": {"name": "p"}, "loop": {"retrain_after_s": -1}})


def test_project_file_with_serve_section(tmp_path):
    (tmp_path / "alloop.toml").write_text('[project]\nname = "p"\n\n[serve]\ncron = "*/10 * * * *"\n')
    cfg, _ = load_config(tmp_path)
    assert cfg.serve.cron == "*/10 * * * *"
    (tmp_path / "alloop.toml").write_text('[project]\nname = "p"\n\n[serve]\ncron = "*/10 * * *"\n')
    with pytest.raises(ConfigError, match=r"alloop\.toml: serve\.cron"):
        load_config(tmp_path)


def test_the_webhook_secret_is_an_environment_variable_alloop_names():
    assert "ALLOOP_WEBHOOK_SECRET" in ENV
