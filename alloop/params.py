"""Plugin parameters: validated by pydantic, errors turned into one readable ConfigError."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from alloop.errors import ConfigError

__all__ = ["format_validation_error", "parse_params"]


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model where an unknown key was found."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            return []
        fields = getattr(current, "model_fields", {})
        if part not in fields:
            # discriminated union member name ("folder", ...) appears in the location
            return []
        ann = fields[part].annotation
        current = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    fields = getattr(current, "model_fields", {}) if current is not None else {}
    return [f.alias or name for name, f in fields.items()]


def format_validation_error(exc: ValidationError, model: type[BaseModel], where: str) -> str:
    """Turn a pydantic error into lines a user can act on."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"])
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            known = _known_fields(model, loc)
            msg = f"unknown field {dotted!r}"
            hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
            if hint:
                msg += f"; did you mean {hint[0]!r}?"
            elif known:
                msg += f"; allowed here: {', '.join(known)}"
        elif err["type"] == "missing":
            msg = f"missing required field {dotted!r}"
        else:
            got = err.get("input")
            msg = f"{dotted}: {err['msg']} (got {got!r})"
        lines.append(msg)
    return f"Invalid {where}: " + "; ".join(lines) + "."


M = TypeVar("M", bound=BaseModel)


def parse_params(model: type[M], params: Mapping[str, Any] | None, where: str) -> M:
    """Validate a component's parameters; errors become one readable ConfigError."""
    try:
        return model.model_validate(dict(params or {}))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model, where)) from None


