"""Write a tiny open_clip model (config + seeded random weights) for an offline run of the recipe.

    python make_tiny_clip.py OUT_FOLDER      -> OUT_FOLDER/alloop-tiny-clip.json, OUT_FOLDER/alloop-tiny-clip.pt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import open_clip
import torch

CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
config = out / "alloop-tiny-clip.json"  # open_clip names the model after the file
config.write_text(json.dumps(CONFIG))
open_clip.add_model_config(config)
torch.manual_seed(0)
model = open_clip.create_model("alloop-tiny-clip")
torch.save(model.state_dict(), out / "alloop-tiny-clip.pt")
print(f"wrote {config} and {out / 'alloop-tiny-clip.pt'}")
