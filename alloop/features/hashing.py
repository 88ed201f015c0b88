"""The ``hashing`` text encoder: hashed word n-gram counts, L2-normalised.

Stateless and deterministic (scikit-learn's :class:`~sklearn.feature_extraction.text.HashingVectorizer`,
MurmurHash3 with a fixed seed): the same text always gives the same row, so features can be
cached by content. No idf weighting, since idf would depend on the pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from alloop.features.base import EncoderParams, sample_texts
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import SampleRef

__all__ = ["HashingTextEncoder"]

_CHUNK = 1024


class HashingTextEncoder(EncoderParams):
    """Texts -> dense float32 hashed n-gram features with unit L2 norm.

    Parameters
    ----------
    n_features : int, default 1024
        Number of hash buckets (feature dimension).
    ngram_range : (int, int), default (1, 2)
        Smallest and largest n-gram length.
    alternate_sign : bool, default False
        Give half of the buckets a negative sign (lessens collision bias, allows negative values).
    lowercase : bool, default True
    analyzer : {"word", "char", "char_wb"}, default "word"
        n-grams of words or of characters.

    Notes
    -----
    A text without any token (empty, or only punctuation with ``analyzer="word"``) gives a row of
    zeros: its L2 norm cannot be made 1.
    """

    name: ClassVar[str] = "hashing"
    version: ClassVar[str] = "1"

    n_features: int = Field(default=1024, ge=1, le=2**20)
    ngram_range: tuple[int, int] = (1, 2)
    alternate_sign: bool = False
    lowercase: bool = True
    analyzer: Literal["word", "char", "char_wb"] = "word"

    @field_validator("ngram_range")
    @classmethod
    def _check_ngrams(cls, value: tuple[int, int]) -> tuple[int, int]:
        lo, hi = value
        if not 1 <= lo <= hi:
            raise ValueError("needs 1 <= min_n <= max_n, e.g. [1, 2]")
        return value

    def fingerprint(self) -> str:
        import sklearn

        return self._fingerprint(f"sklearn={sklearn.__version__}")

    def encode(self, samples: Sequence[SampleRef], progress: Progress = NULL_PROGRESS) -> np.ndarray:
        """Return features of shape (len(samples), n_features), float32, rows of norm 1 (or 0).

        Raises
        ------
        ConfigError
            A sample is not a text (the message suggests the encoder to use).
        SampleDecodeError
            A sample's data has no string ``"text"``.
        """
        texts = sample_texts(samples, self.name)
        from sklearn.feature_extraction.text import HashingVectorizer

        vectorizer = HashingVectorizer(
            n_features=self.n_features,
            ngram_range=tuple(self.ngram_range),
            alternate_sign=self.alternate_sign,
            lowercase=self.lowercase,
            analyzer=self.analyzer,
            norm="l2",
            dtype=np.float32,
        )
        out = np.zeros((len(texts), self.n_features), dtype=np.float32)
        with progress.task("Encoding texts (hashing)", total=len(texts)) as bar:
            for start in range(0, len(texts), _CHUNK):
                chunk = texts[start : start + _CHUNK]
                out[start : start + len(chunk)] = vectorizer.transform(chunk).toarray()
                bar.advance(len(chunk))
        return out
