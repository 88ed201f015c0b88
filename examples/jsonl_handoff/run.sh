#!/usr/bin/env bash
# A loop that waits for people, with the file hand-off connector.
#  1. `alloop run` pushes round 0 to <work_dir>/handoff/tasks.jsonl and returns: labels are pending.
#  2. A labeling tool (here: label.py, which looks at the image folder names) appends labels.jsonl.
#  3. `alloop run` again ingests them, trains, selects round 1, pushes it ... and so on.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$here/../.." && pwd)/.venv/bin
work=${1:-$(mktemp -d /tmp/alloop-jsonl-XXXX)}
echo "project folder: $work"

# an image pool: the bundled digits written as PNG files (class folders give the stand-in its answers)
"$bin/python" - "$work" <<'PY'
import sys
from pathlib import Path
from alloop.pool.bundled import write_digits
print("images in", write_digits(Path(sys.argv[1])))   # <work>/pool/digits/<label>/<i>.png
PY

"$bin/alloop" init "$work" --name handoff --images "$work/pool/digits" --labels 0,1,2,3,4,5,6,7,8,9 \
  --connector jsonl --strategy margin --rounds 4 --force
"$bin/alloop" import -p "$work"
for step in 1 2 3 4; do
  "$bin/alloop" run -p "$work"
  "$bin/python" "$here/label.py" "$work/.alloop/handoff/tasks.jsonl" "$work/.alloop/handoff/labels.jsonl"
done
"$bin/alloop" run -p "$work"
"$bin/alloop" status -p "$work"
