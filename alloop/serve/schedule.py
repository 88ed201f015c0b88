"""The ``[serve]`` schedule as APScheduler triggers: an interval, or a cron expression.

APScheduler 3 numbers the days of the week from Monday = 0, unlike cron (Sunday = 0), so a
numeric day-of-week field would silently fire on the wrong day: names (``mon-fri``, ``sun``)
are required there.
"""

from __future__ import annotations

from typing import Any

from alloop.config import ServeConfig


def make_trigger(cfg: ServeConfig) -> Any:
    """The APScheduler trigger of a ``[serve]`` section."""
    if cfg.cron is not None:
        from apscheduler.triggers.cron import CronTrigger

        return CronTrigger.from_crontab(cfg.cron, timezone=cfg.timezone)
    from apscheduler.triggers.interval import IntervalTrigger

    return IntervalTrigger(seconds=cfg.every_s)


def describe(cfg: ServeConfig) -> str:
    """A short human description: ``every 300 s`` or ``cron "*/10 * * * *"``."""
    if cfg.cron is not None:
        tz = f" {cfg.timezone}" if cfg.timezone else ""
        return f'cron "{cfg.cron}"{tz}'
    every = cfg.every_s
    return f"every {every:g} s"
