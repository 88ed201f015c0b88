"""Incremental pulls: which tasks changed since the last pull, on Label Studio's own clock.

Label Studio stamps a task's ``updated_at`` whenever one of its annotations is created or
updated (and when a prediction is added). A pull after the first reads only the tasks with
``updated_at >= since``, listed through the Data Manager filter
``{"filter": "filter:tasks:updated_at", "operator": "greater_or_equal", "type": "Datetime",
"value": "2026-12-03T19:00:00.000000Z"}`` (UTC), then exports those tasks' annotations.

``since`` is the *server's* time when the previous pull began (its HTTP ``Date`` header, read
before anything else, truncated to the second) minus a margin: alloop's own clock never enters,
so a skewed client clock loses nothing, and a change saved just before that pull's reads but
committed after them is read again next time. Tasks seen twice are harmless: ingesting is
idempotent. A full reconciliation pull (every task, and annotations deleted in Label Studio
found) runs every ``reconcile_every``-th pull and when the last one is older than
``reconcile_after_s`` (server clock), so a change the filter missed (a clock step, an
annotation deleted without touching its task) is picked up there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from connectors.label_studio.api import LabelStudioApi

__all__ = ["Cursor", "changed_task_ids", "server_time"]

_DM_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def server_time(api: LabelStudioApi) -> datetime | None:
    """Label Studio's clock now (from the ``Date`` header of ``GET /api/version``), UTC; None if absent."""
    sdk = api.sdk
    raw = api.call("read the server time", lambda: sdk.versions.with_raw_response.get())
    date = {k.lower(): v for k, v in dict(raw.headers).items()}.get("date")
    if not date:
        return None
    try:
        when = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
    return when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)


def changed_task_ids(api: LabelStudioApi, project_id: int, since: datetime) -> list[str]:
    """Ids of the project's tasks updated at or after ``since`` (one filtered listing, ids only)."""
    value = since.astimezone(timezone.utc).strftime(_DM_TIME)
    query = json.dumps({"filters": {"conjunction": "and", "items": [
        {"filter": "filter:tasks:updated_at", "operator": "greater_or_equal", "type": "Datetime", "value": value},
    ]}})
    sdk = api.sdk

    def listing() -> list[str]:
        return [str(t.id) for t in sdk.tasks.list(project=project_id, query=query, fields="task_only",
                                                  page_size=1000)]

    return api.call("list changed tasks", listing)


class Cursor:
    """The state kept between pulls (stored by alloop as JSON).

    Keys: ``project`` (Label Studio project id), ``since`` (ISO time: read tasks updated at or
    after it), ``full_at`` (server time of the last full pull), ``pulls`` (incremental pulls
    since then).
    """

    def __init__(self, raw: Mapping[str, Any] | None) -> None:
        self.raw = dict(raw or {})

    def _time(self, key: str) -> datetime | None:
        value = self.raw.get(key)
        if not isinstance(value, str):
            return None
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)

    @property
    def since(self) -> datetime | None:
        return self._time("since")

    def full_due(self, *, project_id: int, now: datetime | None, every: int, after_s: float | None) -> bool:
        """Whether this pull must read every task."""
        if self.raw.get("project") != project_id or self.since is None:
            return True
        if int(self.raw.get("pulls", 0)) + 1 >= every:
            return True
        if after_s is None:
            return False
        full_at = self._time("full_at")
        return now is None or full_at is None or (now - full_at).total_seconds() >= after_s

    def after(self, *, project_id: int, now: datetime | None, margin_s: float, full: bool) -> dict[str, Any]:
        """The cursor once this pull (begun at server time ``now``) is stored."""
        since = (now - timedelta(seconds=margin_s)).isoformat() if now is not None else self.raw.get("since")
        if full:
            return {"project": project_id, "since": since, "full_at": now.isoformat() if now else None, "pulls": 0}
        return {**self.raw, "project": project_id, "since": since, "pulls": int(self.raw.get("pulls", 0)) + 1}
