#!/usr/bin/env bash
# Our CPU train step vs the JAX/XLA twin (../shared/peers/peer_jax_gpt.py), alternated N times.
#
# Both sides time one warm training step (forward + backward + AdamW) of the default model
# (V 64, context 64, d 64, 2 layers, 4 heads) on B·T = 16·64 tokens and report the median over
# STEPS steps. Ratio = JAX median / ours (> 1: ours is faster).
#
# usage: scripts/bench_vs_jax.sh [PAIRS=5]
# env:   STEPS (60), PEER (the twin's path), BENCH_BIN (a model-bench binary to time instead
#        of building this tree's, e.g. one saved from an earlier commit), JAX_VENV
#        (target/venv-jax; created with jax from PyPI if jax is missing), PYTHON (python3, only
#        to create that venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${1:-5}
STEPS=${STEPS:-60}
PEER=${PEER:-../shared/peers/peer_jax_gpt.py}
JAX_VENV=${JAX_VENV:-target/venv-jax}
PY=$JAX_VENV/bin/python

[ -f "$PEER" ] || { echo "no JAX twin at $PEER (set PEER=...)" >&2; exit 1; }
if ! "$PY" -c 'import jax' 2>/dev/null; then
    echo "installing jax into $JAX_VENV ..." >&2
    "${PYTHON:-python3}" -m venv "$JAX_VENV"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q jax
fi

# Build the model bench once; its one-off report prints the per-step median (no criterion run
# when the filter matches no group).
BIN=${BENCH_BIN:-$(cargo bench --bench model --no-run --message-format=json 2>/dev/null |
    "$PY" -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "model" and m.get("executable"):
        print(m["executable"])')}
[ -x "$BIN" ] || { echo "could not build the model bench" >&2; exit 1; }

ours() { AEM_BENCH_STEPS=$STEPS "$BIN" --bench __report_only__ 2>&1 | sed -n 's/^train_step median \([0-9.]*\) ms.*/\1/p'; }
theirs() { "$PY" "$PEER" --vocab 64 --ctx 64 --d 64 --layers 2 --heads 4 --batch 16 --steps "$STEPS" |
    sed -n 's/.* median \([0-9.]*\) ms.*/\1/p'; }

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
ratios=()
for i in $(seq 1 "$PAIRS"); do
    a=$(ours); b=$(theirs)
    r=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b / a }')
    ratios+=("$r")
    printf 'pair %d: ours %6.2f ms  jax %6.2f ms  ratio %sx\n' "$i" "$a" "$b" "$r"
done
med=$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "median ratio (jax / ours) over $PAIRS pairs of $STEPS steps: ${med}x"
