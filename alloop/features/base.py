"""What the built-in encoders share: validated parameters, a fingerprint, sample-kind checks.

An encoder is registered in the ``alloop.encoders`` entry-point group and implements
:class:`alloop.protocols.Encoder`; it reads samples through :class:`alloop.protocols.SampleRef`
(never the database). The feature cache makes encoding happen once per content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from typing_extensions import Self

from alloop.errors import ConfigError
from alloop.params import parse_params
from alloop.protocols.context import PluginContext
from alloop.protocols.encoder import SampleRef

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

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None = None, *,
                    context: PluginContext | None = None) -> Self:
        """Build the encoder from its ``[features] params``; bad or unknown keys raise ConfigError."""
        params = dict(params or {})
        if params and not cls.model_fields:
            raise ConfigError(
                f"The {cls.name!r} encoder takes no parameters, got {', '.join(map(repr, params))}. "
                "Remove them from [features] params in alloop.toml."
            )
        return parse_params(cls, params, f"parameters of encoder {cls.name!r} ([features] params in alloop.toml)")

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
