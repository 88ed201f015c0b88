#!/usr/bin/env bash
# Detection with OFDS and your own detector in the loop, offline, with the simulated annotator.
#  1. writes 400 canvases of real MNIST digits (digit 7 rare: 1.5% of objects) with COCO truth, and
#     noisy autolabels standing in for an open-vocabulary detector
#  2. one persisted session: OFDS picks 20 images per round from object proposals (the autolabels
#     in round 0, then the detections of train_detector.py, retrained each round by the command
#     learner); held-out mAP per round; COCO export of the labeled boxes
#  3. the same session with random image selection, and a per-class coverage table and figure
# About 1 minute on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$here/../.." && pwd)/.venv/bin
work=${1:-$(mktemp -d /tmp/alloop-detection-XXXX)}
echo "project folder: $work"
mkdir -p "$work/ofds" "$work/random"
"$bin/python" "$here/prepare_pool.py" --out "$work/data"
for variant in ofds random; do
  cp "$here/train_detector.py" "$work/$variant/"
  "$bin/python" - "$here/alloop.toml" "$work/$variant/alloop.toml" "$variant" <<'PY'
import sys, tomllib
from alloop.config import dumps_toml
src, dst, variant = sys.argv[1:]
cfg = tomllib.loads(open(src).read())
cfg["pool"]["source"]["path"] = "../data/pool/images"
cfg["pool"]["source"]["annotations"] = "../data/pool/annotations.json"
cfg["proposals"]["path"] = "../data/autolabels.jsonl"
if variant == "random":
    cfg["strategy"] = cfg["cold_start"] = {"name": "random"}
open(dst, "w").write(dumps_toml(cfg))
PY
  "$bin/alloop" import -p "$work/$variant"
  "$bin/alloop" run -p "$work/$variant"
  "$bin/alloop" report -p "$work/$variant" --out "$work/$variant/learning_curve.png"
  "$bin/alloop" export "$work/$variant/labels.json" -p "$work/$variant"
done
"$bin/python" "$here/compare.py" "$work/ofds" "$work/random" --out "$work/coverage.png"
