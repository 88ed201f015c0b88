"""The Data Manager view (tab) that shows the open round's tasks most useful first.

Label Studio Community has no active-learning queue: annotators sort the Data Manager and use
"Label Tasks As Displayed". alloop keeps one view per project, titled :data:`VIEW_TITLE`,
filtered to the open round (``data.alloop_round`` equal to it) and ordered by
``data.alloop_rank`` (1 = the strategy's first pick), numerically. In stream mode the open
round's tasks include the unlabeled tasks of earlier rounds it picked again: their
``alloop_round`` and ``alloop_rank`` were updated (:mod:`connectors.label_studio.stream`), so the
view lists them among the new ones, by the new ranking.

Label Studio 1.23.2's API: ``POST /api/dm/views/`` ``{"project": id, "data": {"title": ...,
"filters": {"conjunction": "and", "items": [{"filter": "filter:tasks:data.alloop_round",
"operator": "equal", "type": "Number", "value": 3}]}, "ordering": ["tasks:data.alloop_rank"],
"columnsDisplayType": {"tasks:data.alloop_rank": "Number"}}}``; ``PATCH /api/dm/views/<id>/``
with the same body replaces the filters and ordering; ``GET /api/tasks?view=<id>`` lists the
view's tasks in its order. A data field is ordered as text unless the view's
``columnsDisplayType`` marks it ``"Number"`` (then 10 comes after 9, not after 1).
"""

from __future__ import annotations

import logging
from typing import Any

from connectors.label_studio.api import LabelStudioApi

logger = logging.getLogger(__name__)

__all__ = ["VIEW_TITLE", "ensure_view", "view_data"]

#: the title of alloop's view in each Label Studio project
VIEW_TITLE = "alloop: most useful first"

_NUMBERS = ("tasks:data.alloop_round", "tasks:data.alloop_rank", "tasks:data.alloop_score")


def view_data(round_number: int) -> dict[str, Any]:
    """The view's ``data``: the round's tasks, by rank."""
    return {
        "title": VIEW_TITLE,
        "type": "list",
        "target": "tasks",
        "filters": {"conjunction": "and", "items": [
            {"filter": "filter:tasks:data.alloop_round", "operator": "equal", "type": "Number",
             "value": round_number},
        ]},
        "ordering": ["tasks:data.alloop_rank"],
        "columnsDisplayType": {c: "Number" for c in _NUMBERS},
    }


def _title(view: Any) -> str | None:
    data = getattr(view, "data", None)
    return data.get("title") if isinstance(data, dict) else None


def _round_of(view: Any) -> Any:
    data = getattr(view, "data", None) or {}
    filters = data.get("filters") or {}
    items = filters.get("items") or filters.get("filters") or []
    for item in items:
        if item.get("filter", item.get("column")) == "filter:tasks:data.alloop_round":
            return item.get("value")
    return None


def ensure_view(api: LabelStudioApi, project_id: int, round_number: int) -> int:
    """Create alloop's view of the project, or point it at ``round_number``; return its id.

    Idempotent: the oldest view with :data:`VIEW_TITLE` is updated only when it shows another
    round or another order; none is created when one exists.
    """
    sdk = api.sdk
    views = api.call("list the Data Manager views", lambda: list(sdk.views.list(project=project_id)))
    mine = sorted((v for v in views if _title(v) == VIEW_TITLE), key=lambda v: v.id)
    data = view_data(round_number)
    if not mine:
        view = api.call("create the Data Manager view", lambda: sdk.views.create(project=project_id, data=data),
                        retry=False)
        logger.info("Created Label Studio view %s (%r) of project %s, round %s", view.id, VIEW_TITLE,
                    project_id, round_number)
        return int(view.id)
    view = mine[0]
    current = getattr(view, "data", None) or {}
    if (_round_of(view) != round_number or current.get("ordering") != data["ordering"]
            or current.get("columnsDisplayType") != data["columnsDisplayType"]):
        api.call("update the Data Manager view",
                 lambda: sdk.views.update(str(view.id), project=project_id, data=data))
        logger.info("Pointed Label Studio view %s of project %s at round %s", view.id, project_id, round_number)
    return int(view.id)
