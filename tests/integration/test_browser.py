"""The UI in a real browser: headless Chromium (Debian's ``/usr/bin/chromium``) driven by Playwright,
against the real Label Studio server and a real ``alloop serve`` process.

- Label Studio: log in, the "alloop: most useful first" tab lists the open round's tasks in rank
  order, a task opens with the model's pre-annotation selected, a label chosen and submitted in the
  browser reaches alloop's database on the next tick.
- alloop's status page (``GET /`` of ``alloop serve``): the round table and the learning-curve
  figure loaded, readable on a phone-sized screen, refused without the credentials.

Screenshots go to the test's ``tmp_path``; with ``ALLOOP_UPDATE_SCREENSHOTS=1`` they are also
copied to ``docs/screenshots/`` (the ones the README shows).

Waits are on the page (Playwright's auto-waiting locators and ``expect``) or on network
responses; the timeouts are safety nets.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from alloop.loop.controller import Controller
from alloop.store.engine import session_scope
from alloop.store.models import Annotation, Round, Sample
from connectors.label_studio.views import VIEW_TITLE
from tests.conftest import open_workspace, run_cli, write_project
from tests.helpers.waiting import SAFETY_NET_S
from tests.integration import ls_support as lss
from tests.integration.test_label_studio_order import _picks, _views
from tests.integration.test_serve import _free_port, _health, _kill, _serve, _stop, _wait

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
USER, PASSWORD = "viewer", "status-page-password-0123456789abcdef"
TIMEOUT_MS = SAFETY_NET_S * 1000
SAMPLE_KEY = re.compile(r"\b\d/\d{4}\.png\b")
DIGIT = lambda data: data["sample_id"].split("/")[0]  # noqa: E731 - the truth is the class folder


def _shot(page: Any, path: Path, **kw: Any) -> Path:
    page.screenshot(path=str(path), **kw)
    assert path.stat().st_size > 10_000, f"screenshot {path} is only {path.stat().st_size} bytes: a blank page?"
    if os.environ.get("ALLOOP_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / path.name)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium. Missing: the test fails (no skip) and says how to install it."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the browser tests drive Debian's chromium. Install it with "
                    "`make system-deps` (or `apt-get install -y --no-install-recommends chromium`).", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: `pip install -e '.[test]'` (make setup does).", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(TIMEOUT_MS)
    pg = ctx.new_page()
    yield pg
    ctx.close()


def _login(page: Any, url: str, email: str, password: str) -> None:
    page.goto(f"{url}/user/login")
    page.fill('input[name="email"]', email)
    page.fill('input[name="password"]', password)
    page.click('button[type="submit"]')
    page.wait_for_url(lambda u: "/user/login" not in u)


def test_label_studio_lists_by_rank_shows_the_pre_annotation_and_a_browser_label_is_ingested(
        label_studio, page, tmp_path):
    from playwright.sync_api import expect

    _, ws, ls, who, pid = lss.looped_project(label_studio.document_root, "browser", seed=0, annotators=["bruno"],
                                             loop={"initial_size": 6, "batch_size": 5, "max_rounds": 3})
    lss.label_all(ls, pid, DIGIT, list(who.values()))
    Controller(ws).run()  # round 1: a model's pre-annotations, ranked by the strategy
    picks = [key for key, _, _ in _picks(ws, 1)]
    assert len(picks) == 5
    by_key = {t.data["sample_id"]: t for t in lss.tasks(ls, pid) if t.data["alloop_round"] == 1}
    (view,) = _views(ls, pid)

    creds = label_studio.credentials()
    _login(page, label_studio.url, creds["ALLOOP_LS_ADMIN_EMAIL"], creds["ALLOOP_LS_ADMIN_PASSWORD"])

    # the tab lists round 1's tasks (not round 0's), most useful first
    page.goto(f"{label_studio.url}/projects/{pid}/data?tab={view.id}")
    expect(page.locator(".lsf-tabs-dm__item_active")).to_contain_text(VIEW_TITLE)
    rows = page.locator('[data-testid="table-row"]')
    expect(rows).to_have_count(len(picks))
    shown = [SAMPLE_KEY.findall(text) for text in rows.all_inner_texts()]
    assert [k[0] if len(k) == 1 else k for k in shown] == picks, (
        f"the tab should list round 1's tasks by alloop_rank: expected {picks}, the page shows {shown}")
    # scroll the table to its last columns (sample id, round, rank, score) for the screenshot
    rank_column = page.locator('[data-id="tasks:data.alloop_score"]')
    rank_column.scroll_into_view_if_needed()
    expect(rank_column).to_be_in_viewport()
    _shot(page, tmp_path / "label-studio-most-useful-first.png")

    # the second most useful task opens with the model's choice selected
    key = picks[1]
    task = by_key[key]
    (prediction,) = task.predictions
    predicted = prediction.result[0]["value"]["choices"][0]
    rows.nth(1).click()
    page.wait_for_url(re.compile(rf"[?&]task={task.id}\b"))
    choices = page.locator(".lsf-choices")
    expect(choices.locator(f'input[name="{predicted}"]')).to_be_checked()
    checked = [el.get_attribute("name") for el in choices.locator("input").all() if el.is_checked()]
    assert checked == [predicted], f"expected only the pre-annotation {predicted!r} selected, got {checked}"
    _shot(page, tmp_path / "label-studio-pre-annotation.png")

    # label it in the browser: the true class (a different choice when the model was wrong), Submit
    truth = DIGIT(task.data)
    answer = truth if truth != predicted else next(c for c in "0123456789" if c != predicted)
    choices.locator("label", has=page.locator(f'input[name="{answer}"]')).click()
    expect(choices.locator(f'input[name="{answer}"]')).to_be_checked()
    expect(choices.locator(f'input[name="{predicted}"]')).not_to_be_checked()
    with page.expect_response(lambda r: r.request.method == "POST" and f"/api/tasks/{task.id}/annotations" in r.url
                              ) as posted:
        page.get_by_role("button", name="Submit").click()
    assert posted.value.status == 201, f"Label Studio answered {posted.value.status} to the submit"

    # the next tick ingests it, with who labeled it
    Controller(ws).run()
    with session_scope(ws.engine) as s:
        got = s.exec(select(Annotation.label, Annotation.annotator, Annotation.cancelled)
                     .join(Sample, Sample.id == Annotation.sample_id).where(Sample.key == key)).all()
    assert got == [(answer, creds["ALLOOP_LS_ADMIN_EMAIL"], False)], (
        f"expected the browser's label {answer!r} for {key} by {creds['ALLOOP_LS_ADMIN_EMAIL']}, got {got}")
    ws.close()


def _check_status_page(page: Any, rounds: list[tuple[str, str, str]]) -> None:
    """The round table lists ``rounds`` (number, state, strategy) with an accuracy from round 1 on,
    and the learning-curve image loaded."""
    table = page.locator("#project-statuspage table.rounds tbody tr")
    cells = [row.locator("td").all_inner_texts() for row in table.all()]
    assert [tuple(c[:3]) for c in cells] == rounds, f"round table: expected {rounds}, got {cells}"
    assert all(re.fullmatch(r"0\.\d{3}", c[8]) for c in cells[1:]), f"accuracy column: {cells}"
    width = page.locator("#project-statuspage img.curve").evaluate("e => e.complete ? e.naturalWidth : 0")
    assert width > 0, "the learning-curve image did not load"
    assert page.locator(".project-status").inner_text() == "finished"
    assert page.locator("table.annotators tbody tr").first.locator("td").first.inner_text() == "oracle-0"


def test_the_status_page_of_alloop_serve_shows_the_rounds_and_the_learning_curve(browser, tmp_path):
    pf = write_project(tmp_path / "proj", project={"name": "statuspage", "seed": 0},
                       loop={"initial_size": 20, "batch_size": 10, "max_rounds": 4})
    ws = open_workspace(pf)
    Controller(ws).run()  # the simulated annotator: 4 rounds and a final model
    with session_scope(ws.engine) as s:
        rounds = [(str(r.number), r.state, r.strategy) for r in s.exec(select(Round).order_by(Round.number))]
    ws.close()
    assert len(rounds) == 4

    # alloop report --html writes the same page to a file
    html = tmp_path / "status.html"
    r = run_cli("report", "-p", str(pf), "--html", str(html))
    assert r.returncode == 0, r.stderr
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.goto(html.as_uri())
    _check_status_page(page, rounds)
    ctx.close()

    port = _free_port()
    log = tmp_path / "serve.log"
    proc: subprocess.Popen | None = _serve([pf], port, log, ALLOOP_ML_BACKEND_USER=USER,
                                           ALLOOP_ML_BACKEND_PASSWORD=PASSWORD)
    try:
        _wait(lambda: _health(port), "alloop serve's /healthz", proc=proc, log=log)
        url = f"http://127.0.0.1:{port}/"
        refused = httpx.get(url, timeout=SAFETY_NET_S)
        assert refused.status_code == 401, f"expected 401 without credentials, got {refused.status_code}"
        assert httpx.get(url, auth=(USER, "wrong"), timeout=SAFETY_NET_S).status_code == 401

        for name, viewport in (("status-page.png", {"width": 1280, "height": 900}),
                               ("status-page-phone.png", {"width": 390, "height": 844})):
            ctx = browser.new_context(viewport=viewport, http_credentials={"username": USER, "password": PASSWORD})
            ctx.set_default_timeout(TIMEOUT_MS)
            page = ctx.new_page()
            response = page.goto(url)
            assert response is not None and response.status == 200, f"GET / answered {response and response.status}"
            _check_status_page(page, rounds)
            overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"the page is {overflow} px wider than a {viewport['width']} px screen"
            _shot(page, tmp_path / name, full_page=True)
            ctx.close()
        serve_log = log.read_text()
        assert PASSWORD not in serve_log, "serve logged the status page's password"
        assert "status page at" in serve_log
        assert _stop(proc) == 0, log.read_text()[-3000:]
        proc = None
    finally:
        _kill(proc)
