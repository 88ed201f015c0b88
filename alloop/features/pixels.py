"""The ``pixels`` encoder: an image's grayscale pixels, resized, as a feature vector.

No model and no training: the baseline image features, exact enough that the bundled digits
give back scikit-learn's ``load_digits().data / 16`` (up to the PNG rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from alloop.errors import SampleDecodeError
from alloop.features.base import EncoderParams, check_kinds
from alloop.progress import NULL_PROGRESS, Progress
from alloop.protocols import SampleRef

__all__ = ["PixelEncoder"]

Resample = Literal["bilinear", "box", "bicubic", "lanczos", "nearest"]


class PixelEncoder(EncoderParams):
    """Grayscale pixels scaled to [0, 1].

    Each image is decoded, turned upright from its EXIF orientation, converted to grayscale
    (Pillow mode ``"L"``; 16-bit images keep their precision and are scaled by 1/65535), resized to
    ``size x size`` (aspect ratio not kept; no resampling when it already has that size) and
    flattened row by row.

    Parameters
    ----------
    size : int, default 8
        Side of the square the image is resized to; features have ``size**2`` values.
    resample : {"bilinear", "box", "bicubic", "lanczos", "nearest"}, default "bilinear"
        Pillow resampling filter (Pillow's filters antialias when shrinking).
    """

    name: ClassVar[str] = "pixels"
    version: ClassVar[str] = "1"

    size: int = Field(default=8, ge=1, le=1024)
    resample: Resample = "bilinear"

    def fingerprint(self) -> str:
        import PIL

        return self._fingerprint(f"pillow={PIL.__version__}")

    def encode(self, samples: Sequence[SampleRef], progress: Progress = NULL_PROGRESS) -> np.ndarray:
        """Return features of shape (len(samples), size**2), float32 in [0, 1].

        Raises
        ------
        ConfigError
            A sample is not an image (the message suggests the encoder to use).
        SampleDecodeError
            An image cannot be read; names the sample key and the reason.
        """
        check_kinds(samples, "image", self.name)
        out = np.empty((len(samples), self.size * self.size), dtype=np.float32)
        with progress.task("Encoding images (pixels)", total=len(samples)) as bar:
            for i, sample in enumerate(samples):
                out[i] = self._pixels(sample)
                bar.advance()
        return out

    def _pixels(self, sample: SampleRef) -> np.ndarray:
        from PIL import Image, ImageOps

        raw = sample.data.get("path")
        if not isinstance(raw, str):
            raise SampleDecodeError(sample.key, f"expected data {{'path': <file>}}, got {sample.data!r}")
        path = Path(raw) if Path(raw).is_absolute() else Path(sample.work_dir) / raw
        filters = {
            "bilinear": Image.Resampling.BILINEAR,
            "box": Image.Resampling.BOX,
            "bicubic": Image.Resampling.BICUBIC,
            "lanczos": Image.Resampling.LANCZOS,
            "nearest": Image.Resampling.NEAREST,
        }
        try:
            img: Image.Image  # Image.open gives an ImageFile; exif_transpose and fromarray plain Images
            with Image.open(path) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                if img.mode.startswith("I") or img.mode == "F":
                    # 16/32-bit grayscale: "L" would clip at 255; scale 16-bit range to [0, 1]
                    scale = 1.0 if img.mode == "F" else 65535.0
                    values = np.clip(np.asarray(img, dtype=np.float32) / scale, 0.0, 1.0)
                    gray, peak = Image.fromarray(values.astype(np.float32)), 1.0
                else:
                    gray, peak = img.convert("L"), 255.0
            if gray.size != (self.size, self.size):
                gray = gray.resize((self.size, self.size), resample=filters[self.resample])
            pixels = np.asarray(gray, dtype=np.float32)
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
            raise SampleDecodeError(sample.key, f"{type(exc).__name__}: {exc}") from exc
        return np.clip(pixels.reshape(-1) / np.float32(peak), 0.0, 1.0)
