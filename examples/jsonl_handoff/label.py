"""A stand-in labeling tool: answers every new task in tasks.jsonl from the image's folder name.

    python label.py TASKS_JSONL LABELS_JSONL

A real team replaces this with their tool's export; the format is one JSON object per line:
{"key": ..., "label": ..., "annotator": ...} (see connectors/jsonl.py for optional fields).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

tasks_path, labels_path = Path(sys.argv[1]), Path(sys.argv[2])
done = set()
if labels_path.exists():
    done = {json.loads(line)["key"] for line in labels_path.read_text().splitlines() if line.strip()}
new = 0
with labels_path.open("a") as out:
    for line in tasks_path.read_text().splitlines():
        task = json.loads(line)
        if task["key"] in done:
            continue
        label = Path(task["data"]["path"]).parent.name  # the stand-in "looks" at the folder name
        out.write(json.dumps({"key": task["key"], "label": label, "annotator": "stand-in"}) + "\n")
        done.add(task["key"])
        new += 1
print(f"labeled {new} new tasks")
