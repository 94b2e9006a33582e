#!/usr/bin/env bash
# GiGPO vs GiGPO + AEM on the default level, paired by seed (ENVIRONMENTS.md's protocol):
# trains both arms for each seed with the default config, evaluates each final checkpoint on 512
# held-out and 512 OOD tasks (greedy and sampled), and writes results/aem_vs_base/summary.{json,md}.
#   scripts/aem_vs_base.sh [SEEDS...]        (default: 0 1 2 3 4; ~5 minutes per run on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=("$@"); [ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2 3 4)
out=results/aem_vs_base
mkdir -p "$out" runs/aem_vs_base
cargo build --release -q
for s in "${seeds[@]}"; do
  for arm in aem base; do
    flag=$([ "$arm" = aem ] && echo true || echo false)
    run="runs/aem_vs_base/$arm-s$s"
    if [ ! -f "$out/$arm-s$s.eval.json" ]; then
      rm -rf "$run"
      ./target/release/aem train --seed "$s" --aem "$flag" --out "$run" 2>&1 | tail -1
      ./target/release/aem eval --checkpoint "$run" --json "$out/$arm-s$s.eval.json" > /dev/null
      cp "$run/summary.json" "$out/$arm-s$s.summary.json"
    fi
  done
done
python3 scripts/aem_vs_base_summary.py "$out"
