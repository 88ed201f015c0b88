"""Real images for tests: scikit-learn's digits written as PNGs in one folder per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_digit_folders(folder: Path, classes: int, per_class: int, size: int = 32) -> Path:
    """``folder/<digit>/<index>.png`` for the first ``per_class`` digits of each of ``classes``."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for d in range(classes):
        (folder / str(d)).mkdir(parents=True)
        for i in np.flatnonzero(digits.target == d)[:per_class]:
            img = Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).resize((size, size))
            img.save(folder / str(d) / f"{i}.png")
    return folder
