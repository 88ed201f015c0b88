"""A tiny, real open_clip model for tests: no download, a few MB, milliseconds per batch.

No package ships real CLIP weights and the test machines are offline, so the tests bring their
own: :func:`make_tiny_clip` writes an open_clip model config (a 2-layer ViT on 64x64 images and a
2-layer text transformer, 64-d embeddings, about 3.4M parameters - most of them the token
embedding of CLIP's 49,408-token vocabulary) and a checkpoint of seeded random weights made by
open_clip itself. The checkpoint reloads through the path a user's checkpoint takes::

    open_clip.add_model_config(config_path)
    open_clip.create_model_and_transforms("alloop-tiny-clip", pretrained=str(checkpoint_path))

and, in alloop, ``OpenClipImageEncoder(model=TINY_CLIP_NAME, pretrained=str(checkpoint_path),
model_config=config_path)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alloop.protocols import SampleRef

#: open_clip names a config by its file's stem: this name is the file ``alloop-tiny-clip.json``.
TINY_CLIP_NAME = "alloop-tiny-clip"

TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def register_tiny_clip(config_path: Path) -> None:
    """Register the config with open_clip unless that exact config is already registered."""
    import open_clip

    if open_clip.get_model_config(TINY_CLIP_NAME) != TINY_CLIP_CONFIG:
        open_clip.add_model_config(config_path)


def make_tiny_clip(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the tiny model's config and a checkpoint of seeded random weights into ``folder``.

    Parameters
    ----------
    folder : Path
        Created if missing.
    seed : int, default 0
        Seed of the weights: the same seed gives bit-identical checkpoints, another seed other
        weights (to test that a change of weights invalidates caches).

    Returns
    -------
    config_path, checkpoint_path : Path
        ``<folder>/alloop-tiny-clip.json`` and ``<folder>/alloop-tiny-clip-seed<seed>.pt``
        (a plain ``torch.save(model.state_dict(), path)``).
    """
    import open_clip
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / f"{TINY_CLIP_NAME}.json"
    config_path.write_text(json.dumps(TINY_CLIP_CONFIG, indent=2))
    register_tiny_clip(config_path)
    checkpoint_path = folder / f"{TINY_CLIP_NAME}-seed{seed}.pt"
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    torch.save(model.state_dict(), checkpoint_path)
    return config_path, checkpoint_path


def write_test_images(folder: Path, n_digits: int = 4) -> list[SampleRef]:
    """Real PNG images and their :class:`SampleRef` (key = file name).

    ``n_digits`` scikit-learn digits upscaled to 64x64 (grayscale saved as RGB), then a red disc
    on 80x50 and a blue square on 30x60 (non-square sizes exercise the resize and centre crop).
    Content hashes are the sha256 of the file bytes; paths are relative to ``folder``.
    """
    import hashlib

    import numpy as np
    from PIL import Image, ImageDraw
    from sklearn.datasets import load_digits

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i, digit in enumerate(load_digits().images[:n_digits]):
        gray = np.kron(digit * (255 / 16), np.ones((8, 8))).astype(np.uint8)
        images.append((f"digit{i}.png", Image.fromarray(gray).convert("RGB")))
    disc = Image.new("RGB", (80, 50), "white")
    ImageDraw.Draw(disc).ellipse((20, 5, 60, 45), fill=(220, 30, 30))
    square = Image.new("RGB", (30, 60), (240, 240, 200))
    ImageDraw.Draw(square).rectangle((5, 20, 25, 40), fill=(20, 40, 210))
    images += [("disc.png", disc), ("square.png", square)]
    refs = []
    for name, img in images:
        img.save(folder / name)
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        refs.append(SampleRef(name, "image", digest, {"path": name}, folder))
    return refs
