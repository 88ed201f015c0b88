"""Acting as annotators through the real Label Studio API (several users, in a thread pool), and
the usual start of a test: a digits project whose first round is in Label Studio."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from label_studio_sdk import LabelStudio

from alloop.loop.controller import Controller
from alloop.workspace import Workspace


def client() -> LabelStudio:
    return LabelStudio(base_url=os.environ["LABEL_STUDIO_URL"], api_key=os.environ["LABEL_STUDIO_API_KEY"], timeout=120)


def project_id(ls: LabelStudio, title: str) -> int:
    found = [p.id for p in ls.projects.list(title=title) if p.title == title]
    assert len(found) == 1, f"expected one project titled {title!r}, found {found}"
    return found[0]


def users(ls: LabelStudio, names: list[str]) -> dict[str, int]:
    """User ids by name, creating the users once."""
    existing = {u.email: u.id for u in ls.users.list()}
    out = {}
    for n in names:
        email = f"{n}@alloop.local"
        if email not in existing:
            existing[email] = ls.users.create(username=n, email=email, password="pw-" + n).id
        out[n] = existing[email]
    return out


def tasks(ls: LabelStudio, pid: int, fields: str = "all") -> list[Any]:
    return list(ls.tasks.list(project=pid, fields=fields, page_size=1000))


def choice(label: str, to_name: str = "image") -> list[dict[str, Any]]:
    return [{"from_name": "label", "to_name": to_name, "type": "choices", "value": {"choices": [label]}}]


def annotate(ls: LabelStudio, jobs: list[tuple[int, list[dict[str, Any]], int, bool]], threads: int = 4) -> list[Any]:
    """Create annotations ``(task id, result, user id, cancelled)`` concurrently."""

    def one(job: tuple[int, list[dict[str, Any]], int, bool]) -> Any:
        tid, result, uid, cancelled = job
        return ls.annotations.create(tid, result=result, completed_by=uid, was_cancelled=cancelled, lead_time=1.5)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, jobs))


def label_all(
    ls: LabelStudio, pid: int, answer: Callable[[dict[str, Any]], str], who: list[int], to_name: str = "image"
) -> int:
    """Every annotator labels every task that has no annotation from them yet."""
    jobs = []
    for t in tasks(ls, pid):
        done = {a["completed_by"] for a in (t.annotations or [])}
        for uid in who:
            if uid not in done:
                jobs.append((t.id, choice(answer(t.data), to_name), uid, False))
    annotate(ls, jobs)
    return len(jobs)


class LoopedProject(NamedTuple):
    """What :func:`looped_project` made."""

    pf: Path
    """The project file."""
    ws: Workspace
    ls: LabelStudio
    who: dict[str, int]
    """The annotators' Label Studio user ids by name."""
    pid: int
    """The Label Studio project ("alloop: <name>")."""


def looped_project(document_root: str | Path, name: str, *, seed: int, loop: dict[str, Any],
                   annotators: list[str]) -> LoopedProject:
    """A digits project ``name`` under Label Studio's document root (the ``label_studio`` fixture's),
    imported and run until its first round waits for labels in Label Studio; the annotators exist."""
    from tests.conftest import open_workspace, write_project

    pf = write_project(Path(document_root) / name, project={"name": name, "seed": seed},
                       connector={"name": "label_studio"}, loop=loop)
    ws = open_workspace(pf)
    ls = client()
    who = users(ls, annotators)
    Controller(ws).run()
    return LoopedProject(pf, ws, ls, who, project_id(ls, f"alloop: {name}"))
