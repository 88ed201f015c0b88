"""``alloop serve`` refuses to start, with one line, when it cannot do its job."""

from __future__ import annotations

import socket

from tests.conftest import open_workspace, run_cli, write_project


def test_no_secret_for_a_label_studio_project_is_a_clear_error(tmp_path):
    pf = write_project(tmp_path / "p", connector={"name": "label_studio"})
    r = run_cli("serve", "-p", str(pf), env={"ALLOOP_WEBHOOK_SECRET": ""}, timeout=60)
    assert r.returncode == 2
    assert "ALLOOP_WEBHOOK_SECRET is not set" in r.stderr and "--no-webhook" in r.stderr
    r = run_cli("serve", "-p", str(pf), "--no-webhook", "--register-webhook", env={"ALLOOP_WEBHOOK_SECRET": ""},
                timeout=60)
    assert r.returncode == 2 and "contradict" in r.stderr


def test_a_bad_schedule_or_a_busy_port_stop_serve_before_it_starts(tmp_path):
    pf = write_project(tmp_path / "bad", serve={"cron": "0 7 * * 1"})
    r = run_cli("serve", "-p", str(pf), timeout=60)
    assert r.returncode == 2 and "serve.cron" in r.stderr and "names" in r.stderr
    pf = write_project(tmp_path / "p", project={"name": "t"})
    empty = run_cli("serve", "-p", str(pf), timeout=60)
    assert empty.returncode == 2 and "alloop import" in empty.stderr  # no samples yet
    open_workspace(pf).close()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = run_cli("serve", "-p", str(pf), "--port", str(port), timeout=60)
    assert r.returncode == 2 and f"Cannot listen on 127.0.0.1:{port}" in r.stderr and "--port" in r.stderr


def test_two_projects_with_one_name_are_refused(tmp_path):
    a = write_project(tmp_path / "a", project={"name": "same"})
    b = write_project(tmp_path / "b", project={"name": "same"})
    r = run_cli("serve", "-p", str(a), "-p", str(b), timeout=60)
    assert r.returncode == 2 and "['same'] given twice" in r.stderr


def test_labelstudio_connect_without_the_ml_backend_password_is_a_clear_error(tmp_path):
    pf = write_project(tmp_path / "p", connector={"name": "label_studio"})
    r = run_cli("labelstudio", "connect", "-p", str(pf), env={"ALLOOP_ML_BACKEND_PASSWORD": ""}, timeout=60)
    assert r.returncode == 2
    text = " ".join(r.stderr.split())
    assert "ALLOOP_ML_BACKEND_PASSWORD is not set" in text and "HTTP Basic auth" in text and "never alloop.toml" in text
    jsonl = write_project(tmp_path / "j", connector={"name": "jsonl"})
    r = run_cli("labelstudio", "connect", "-p", str(jsonl), env={"ALLOOP_ML_BACKEND_PASSWORD": "x" * 32}, timeout=60)
    assert r.returncode == 2 and "jsonl" in r.stderr and "label_studio" in r.stderr
