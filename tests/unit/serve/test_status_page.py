"""The status page's data and HTML: labels per class and annotator agreement from real annotation
rows (SQLite), the page rendered from them, escaped."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.testclient import TestClient

from alloop.report import labels_and_annotators
from alloop.serve.status import project_view, render, status_routes, write_html
from alloop.store.engine import session_scope
from alloop.store.models import Annotation, Sample, utcnow
from alloop.store.queries import get_project


def _annotate(ws, votes: list[tuple[int, str, str]], tag: str = "", **extra) -> None:
    """(sample index, annotator, label) rows, one second apart in that order."""
    t0 = utcnow()
    with session_scope(ws.engine) as s:
        pid = get_project(s, ws.name).id
        ids = list(s.exec(select(Sample.id).where(Sample.project_id == pid).order_by(Sample.id).limit(10)))
        for i, (sample, who, label) in enumerate(votes):
            s.add(Annotation(project_id=pid, sample_id=ids[sample], connector="test", source_id=f"{tag}{i}-{who}",
                             annotator=who, label=label, updated_at=t0 + timedelta(seconds=i), **extra))


def test_labels_per_class_and_agreement_with_the_kept_label(digits_ws):
    _annotate(digits_ws, [
        (0, "ann", "3"), (0, "bo", "3"), (0, "cy", "5"),  # majority 3: ann and bo agree, cy not
        (1, "ann", "7"), (1, "bo", "1"),                  # a tie: the latest vote (bo's 1) is kept
        (2, "ann", "7"),                                  # alone: not shared
        (3, "ann", "2"), (3, "ann", "4"),                 # ann changed her mind: the latest (4) counts
    ])
    _annotate(digits_ws, [(4, "ann", "9")], tag="skip", cancelled=True)   # a skip is no label
    got = labels_and_annotators(digits_ws.engine, digits_ws.name)
    assert got["classes"] == {"1": 1, "3": 1, "4": 1, "7": 1}
    assert got["annotators"] == [
        {"annotator": "ann", "labeled": 4, "shared": 2, "agreement": 0.5},
        {"annotator": "bo", "labeled": 2, "shared": 2, "agreement": 1.0},
        {"annotator": "cy", "labeled": 1, "shared": 1, "agreement": 0.0},
    ]
    # pairs on one sample: (ann,bo) (ann,cy) (bo,cy) on sample 0, (ann,bo) on sample 1: one agrees
    assert got["pairwise"] == 0.25
    assert labels_and_annotators(digits_ws.engine, digits_ws.name, "latest")["classes"] == {
        "1": 1, "4": 1, "5": 1, "7": 1}


def test_the_page_escapes_what_annotators_typed_and_says_when_nothing_is_there(digits_ws, tmp_path):
    empty = render([project_view(digits_ws)])
    assert "No round yet." in empty and "No labels yet." in empty and "<img" not in empty
    assert 'name="viewport"' in empty
    _annotate(digits_ws, [(0, "<script>alert(1)</script>", "3")])
    page = write_html(digits_ws, tmp_path / "out" / "status.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_route_answers_the_guard_s_refusal_or_the_page(digits_ws):
    allowed = {"yes": False}

    def check(_request):
        return None if allowed["yes"] else PlainTextResponse("no", status_code=401)

    live = {"t": {"last_error": "ConnectorError: Label Studio said 500", "next_run_at": None}}
    app = Starlette(routes=status_routes({"t": digits_ws}, lambda: live, check))
    with TestClient(app) as client:
        assert client.get("/").status_code == 401
        allowed["yes"] = True
        r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "ConnectorError: Label Studio said 500" in r.text
