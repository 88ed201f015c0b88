#!/usr/bin/env bash
# The CLIP + ActiveKD + PCoreSet recipe, offline: bundled digits images, a tiny local CLIP model,
# the simulated annotator. A few minutes on 2 cores (most of it embedding 1,797 images).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$here/../.." && pwd)/.venv/bin
work=${1:-$(mktemp -d /tmp/alloop-clip-XXXX)}
mkdir -p "$work"
"$bin/python" "$here/make_tiny_clip.py" "$work/clip"
cat > "$work/alloop.toml" <<TOML
[project]
name = "clip-digits"

[pool]
test_fraction = 0.3
[pool.source]
type = "bundled"
name = "digits"

[features]
name = "open_clip"
params = { model = "alloop-tiny-clip", pretrained = "clip/alloop-tiny-clip.pt", model_config = "clip/alloop-tiny-clip.json" }

[teacher]
name = "clip_zeroshot"
params = { model = "alloop-tiny-clip", pretrained = "clip/alloop-tiny-clip.pt", model_config = "clip/alloop-tiny-clip.json" }

[learner]
name = "kd_student"
params = { epochs = 5 }

[strategy]
name = "pcoreset"

[loop]
initial_size = 10
batch_size = 10
max_rounds = 4
TOML
"$bin/alloop" import -p "$work"
"$bin/alloop" run -p "$work"
"$bin/alloop" report -p "$work"
