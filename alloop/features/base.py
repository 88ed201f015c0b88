"""Encoders turn samples into feature vectors; the cache makes that happen once per content.

An encoder is registered in the ``alloop.encoders`` entry-point group and implements
:class:`Encoder`. It reads samples through :class:`SampleRef` (never the database).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from alloop.errors import ConfigError
from alloop.progress import Progress


@dataclass(frozen=True)
class SampleRef:
    """What an encoder needs to read one sample.

    ``data`` is the sample's stored locator (see :class:`alloop.pool.base.PoolItem`);
    relative paths in it are relative to ``work_dir``.
    """

    key: str
    kind: str
    content_hash: str
    data: dict[str, Any]
    work_dir: Path


@runtime_checkable
class Encoder(Protocol):
    """Maps samples to float32 feature rows.

    ``fingerprint()`` must change whenever the output for the same content could change
    (other weights, other parameters): it keys the on-disk cache.
    """

    def fingerprint(self) -> str: ...

    def encode(self, samples: Sequence[SampleRef], progress: Progress) -> np.ndarray:
        """Return an array of shape (len(samples), dim), float32.

        Raises :class:`alloop.errors.SampleDecodeError` naming the first unreadable sample.
        """
        ...


#: sample kind -> the built-in encoder that reads it (for error messages)
ENCODER_FOR_KIND = {"image": "pixels", "text": "hashing", "vector": "vector"}


class EncoderParams(BaseModel):
    """Base of the built-in encoders: frozen, validated keyword parameters.

    Subclasses set ``name`` (the registry name) and ``version`` (bumped whenever the algorithm's
    output changes, so the feature cache is invalidated).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ClassVar[str] = "encoder"
    version: ClassVar[str] = "1"

    def __init__(self, **params: Any) -> None:
        if params and not type(self).model_fields:
            raise ConfigError(
                f"The {type(self).name!r} encoder takes no parameters, got "
                f"{', '.join(map(repr, params))}. Remove them from [features] params in alloop.toml."
            )
        try:
            super().__init__(**params)
        except ValidationError as exc:
            from alloop.config import format_validation_error

            where = f"parameters of encoder {type(self).name!r} ([features] params in alloop.toml)"
            raise ConfigError(format_validation_error(exc, type(self), where)) from None

    @classmethod
    def from_params(cls, params: dict[str, Any] | None = None) -> "EncoderParams":
        """Build the encoder from a parameter dict; bad or unknown keys raise ConfigError."""
        params = dict(params or {})
        bad = [k for k in params if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"Parameter names of encoder {cls.name!r} must be strings, got {bad!r}.")
        return cls(**params)

    def _fingerprint(self, *extra: str) -> str:
        """``<name>-v<version>-<12 hex>``: safe as a folder name, changes with any parameter."""
        payload = json.dumps([self.model_dump(mode="json"), *extra], sort_keys=True)
        return f"{self.name}-v{self.version}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def check_kinds(samples: Sequence[SampleRef], kind: str, encoder: str) -> None:
    """Raise ConfigError if a sample is not of ``kind``, naming it and the encoder to use."""
    for s in samples:
        if s.kind != kind:
            other = ENCODER_FOR_KIND.get(s.kind)
            fix = (
                f'Set `features.name = "{other}"` in alloop.toml'
                if other
                else "Choose an encoder for that kind in [features] of alloop.toml"
            )
            raise ConfigError(
                f"The {encoder!r} encoder reads {kind} samples, but sample {s.key!r} is a "
                f"{s.kind!r} sample. {fix}."
            )


def sample_texts(samples: Sequence[SampleRef], encoder: str) -> list[str]:
    """The ``data["text"]`` of text samples, in order.

    Raises
    ------
    ConfigError
        A sample is not a text (see :func:`check_kinds`).
    SampleDecodeError
        A sample's data has no string ``"text"``; names the first such sample.
    """
    from alloop.errors import SampleDecodeError

    check_kinds(samples, "text", encoder)
    texts = []
    for s in samples:
        text = s.data.get("text")
        if not isinstance(text, str):
            raise SampleDecodeError(s.key, f"expected data {{'text': <str>}}, got {s.data!r}")
        texts.append(text)
    return texts
