"""Acting as annotators through the real Label Studio API (several users, in a thread pool)."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from label_studio_sdk import LabelStudio


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
