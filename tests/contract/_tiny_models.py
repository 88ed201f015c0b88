"""Small real models the contract suites create offline (beside tests/helpers/tiny_clip.py)."""

from __future__ import annotations

import json
from pathlib import Path

#: a second tiny open_clip architecture: another name, 32-d embeddings, one vision layer
TINY_CLIP_B_NAME = "alloop-tiny-clip-b"


def make_tiny_clip_b(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the second tiny CLIP's config and a checkpoint of seeded weights; register the config.

    Returns ``(config path, checkpoint path)``.
    """
    import open_clip
    import torch

    from tests.helpers.tiny_clip import TINY_CLIP_CONFIG

    config = json.loads(json.dumps(TINY_CLIP_CONFIG))
    config["embed_dim"] = 32
    config["vision_cfg"]["layers"] = 1
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{TINY_CLIP_B_NAME}.json"
    path.write_text(json.dumps(config))
    if open_clip.get_model_config(TINY_CLIP_B_NAME) != config:
        open_clip.add_model_config(path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_CLIP_B_NAME, pretrained=None)
    checkpoint = folder / f"{TINY_CLIP_B_NAME}-seed{seed}.pt"
    torch.save(model.state_dict(), checkpoint)
    return path, checkpoint
