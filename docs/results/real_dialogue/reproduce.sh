#!/usr/bin/env bash
# README "Trained on real dialogue", end to end: the `tiny` DialogLM trained on the LCCC-base valid split
# and the chatterbot-trained demo model, both evaluated on the same held-out LCCC dialogues and asked the
# same ten prompts. Needs ../shared/data/lccc_base/LCCC-base_valid.json (or LCCC=FILE: any LCCC JSON
# file); `make demo` and `make test` do not. Writes docs/results/real_dialogue/ (reports, replies, log).
#
#   bash docs/results/real_dialogue/reproduce.sh
#   FROM_STEP=2 bash docs/results/real_dialogue/reproduce.sh   # continue after step 1 (its model in runs/), log appended
#
# RAY_PREFIX is put before each command that starts Ray (e.g. "nice -n 10", or a lock on a shared box).
set -euo pipefail
cd "$(dirname "$0")/../../.."
LIAOTIAN=${LIAOTIAN:-.venv/bin/liaotian}
LCCC=${LCCC:-../shared/data/lccc_base/LCCC-base_valid.json}
OUT=docs/results/real_dialogue
CFG=$OUT/config.yaml
RUN=runs/real-dialogue            # the LCCC-trained model (run_dir in config.yaml)
DEMO=runs/real-dialogue-demo      # the demo's dialogue model, trained as configs/demo.yaml trains it
RAY_PREFIX=${RAY_PREFIX:-}
LOG=$OUT/commands.log

if [ ! -f "$LCCC" ]; then
  echo "reproduce.sh: $LCCC is absent (it comes from ../shared/data; set LCCC=FILE to use another LCCC JSON file)" >&2
  exit 2
fi
FROM_STEP=${FROM_STEP:-1}
[ "$FROM_STEP" -gt 1 ] || : > "$LOG"
run_logged() {  # PREFIX CMD...: run PREFIX CMD, log CMD with its duration and its output (Ray's INFO lines left out)
  local prefix=$1; shift
  echo "\$ $*" | tee -a "$LOG"
  local t0=$SECONDS
  $prefix "$@" 2>&1 | grep -v -E "^\(|INFO|WARNING|^$|Warning:|warnings.warn" | tee -a "$LOG"
  echo "# $((SECONDS - t0)) s" | tee -a "$LOG"
}
step() { run_logged "" "$@"; }
ray() { run_logged "$RAY_PREFIX" "$@"; }

echo "# $(date -u +%FT%TZ) on $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); git $(git rev-parse --short HEAD)" >> "$LOG"
# 1. The LCCC model: preprocess (hash split 90/5/5), train for the fixed budget, evaluate on the test part.
if [ "$FROM_STEP" -le 1 ]; then
ray "$LIAOTIAN" data dialog "$LCCC" --config "$CFG" --overwrite
ray "$LIAOTIAN" train dialog --config "$CFG"
step "$LIAOTIAN" eval dialog "$RUN/models/dialog" --config "$CFG"
mkdir -p "$OUT/lccc_tiny" && cp "$RUN/eval/report.json" "$RUN/eval/report.md" "$OUT/lccc_tiny/"
fi

# 2. The demo's model: chatterbot data and configs/demo.yaml's dialog training (its vocabulary is the one the
#    demo shares with the review data, so `data text` first); then the same LCCC dialogues encoded with that
#    vocabulary (same hash split, so the same test dialogues) for its evaluation.
ray "$LIAOTIAN" data text --config configs/demo.yaml --set run_dir=$DEMO --overwrite
ray "$LIAOTIAN" data dialog --config configs/demo.yaml --set run_dir=$DEMO --overwrite
ray "$LIAOTIAN" train dialog --config configs/demo.yaml --set run_dir=$DEMO --set ray.include_dashboard=false
ray "$LIAOTIAN" data dialog "$LCCC" --config "$CFG" --set run_dir=$DEMO --vocab "$DEMO/models/dialog/vocab.txt" \
  --output "$DEMO/data/lccc" --overwrite
step "$LIAOTIAN" eval dialog "$DEMO/models/dialog" --config "$CFG" --set run_dir=$DEMO --data "$DEMO/data/lccc"
mkdir -p "$OUT/demo_chatterbot" && cp "$DEMO/eval/report.json" "$DEMO/eval/report.md" "$OUT/demo_chatterbot/"

# 3. Ten everyday prompts, each in a fresh conversation (/reset), default decoding (consistent nucleus, p = 0.9), seed 0.
for model in "$RUN/models/dialog:lccc_tiny" "$DEMO/models/dialog:demo_chatterbot"; do
  sed 's/$/\n\/reset/' "$OUT/prompts.txt" | "$LIAOTIAN" chat "${model%%:*}" --config "$CFG" --seed 0 > "$OUT/${model##*:}/chat.txt"
done
step .venv/bin/python "$OUT/summarise.py"
