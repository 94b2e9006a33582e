#!/usr/bin/env bash
# One command on a GPU machine: everything the crate claims about a GPU, checked, with a summary.
#
#   bash scripts/gpu_check.sh [OUT_DIR]     from a repo with release builds (scripts/gpu_kit.sh makes them)
#   bash gpu-kit/run.sh [OUT_DIR]           from the kit, on a machine with only the NVIDIA driver
#
# Steps (each PASS, FAIL or SKIP with the reason; logs under OUT_DIR, default
# results/gpu/<date>-<device>/):
#   env        aem doctor (driver, GPU, limits, embedded images, which one loads, NVRTC) + nvidia-smi
#   smoke      the default plan on a small demo batch: aem head --backend cuda vs --backend cpu
#   bf16       the same on BF16 logits with a BF16 gradient
#   parity     the gpu_parity suite with AEM_REQUIRE_CUDA=1 (every plan, limits, static shared memory)
#   model      the model's and the trainer's device tests on the GPU (AEM_REQUIRE_CUDA=1)
#   bench      the loss-head bench's GPU groups at T = 16384, V ∈ {32000, 151936}, f16 and bf16
#              (% of the measured device-copy bandwidth is printed by the bench)
#   big        aem head --backend cuda at T·V > 2^31 against --backend cpu (sampled dlogits rows)
#   sanitizer  compute-sanitizer memcheck and racecheck over gpu_parity, when the tool is present
# Exits non-zero when any step fails. Without a GPU every GPU step is SKIP with the reason.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -x "$HERE/bin/aem" ]; then              # the kit
  BIN="$HERE/bin"; ROOT="$HERE"
else                                         # the repo: binaries listed by scripts/gpu_kit.sh
  ROOT="$(cd "$HERE/.." && pwd)"; BIN="$ROOT/gpu-kit/bin"
fi
AEM="$BIN/aem"
PY="${PYTHON:-python3}"
if [ ! -x "$AEM" ]; then
  echo "gpu_check: $AEM not found; run bash scripts/gpu_kit.sh first" >&2
  exit 2
fi

device="none"
if command -v nvidia-smi >/dev/null 2>&1; then
  device="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' )"
  [ -n "$device" ] || device="none"
fi
OUT="${1:-$ROOT/results/gpu/$(date -u +%Y-%m-%d)-$device}"
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
fails=0

record() { # step status why
  printf '%-10s %-5s %s\n' "$1" "$2" "$3" | tee -a "$SUMMARY"
  [ "$2" = FAIL ] && fails=$((fails + 1))
  return 0
}

run_step() { # step log-name command...
  local step="$1" log="$OUT/$2.log"; shift 2
  local t0=$SECONDS
  if "$@" > "$log" 2>&1; then
    record "$step" PASS "$(( SECONDS - t0 )) s, log $log"
  else
    record "$step" FAIL "exit $?, $(( SECONDS - t0 )) s, log $log (tail: $(tail -1 "$log"))"
  fi
}

# env: always runs.
"$AEM" doctor --json "$OUT/doctor.json" > "$OUT/doctor.txt" 2>&1
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
gpu_line="$(sed -n 's/^device   //p' "$OUT/doctor.txt")"
if grep -q '^limits ' "$OUT/doctor.txt"; then
  record env PASS "$gpu_line"
  have_gpu=1
else
  record env PASS "no GPU: $gpu_line"
  have_gpu=0
fi
why="no GPU ($gpu_line)"

if [ "$have_gpu" = 1 ]; then
  export AEM_REQUIRE_CUDA=1
  run_step smoke smoke bash -c "
    '$AEM' demo-input --output '$OUT/smoke-in.safetensors' --responses 64 --vocab 32000 &&
    '$AEM' head --backend cuda --input '$OUT/smoke-in.safetensors' --output '$OUT/smoke-cuda.safetensors' &&
    '$AEM' head --backend cpu --input '$OUT/smoke-in.safetensors' --output '$OUT/smoke-cpu.safetensors' &&
    '$PY' '$ROOT/scripts/head_compare.py' '$OUT/smoke-cuda.safetensors' '$OUT/smoke-cpu.safetensors'"
  run_step bf16 bf16 bash -c "
    '$AEM' demo-input --output '$OUT/bf16-in.safetensors' --responses 64 --vocab 32000 --logits-dtype bf16 &&
    '$AEM' head --backend cuda --grad-dtype bf16 --input '$OUT/bf16-in.safetensors' --output '$OUT/bf16-cuda.safetensors' &&
    '$AEM' head --backend cpu --grad-dtype bf16 --input '$OUT/bf16-in.safetensors' --output '$OUT/bf16-cpu.safetensors' &&
    '$PY' '$ROOT/scripts/head_compare.py' '$OUT/bf16-cuda.safetensors' '$OUT/bf16-cpu.safetensors'"
  run_step parity parity "$BIN/gpu_parity" --nocapture --test-threads 1
  run_step model model bash -c "'$BIN/model_device' gpu --nocapture && '$BIN/train_device' gpu --nocapture"
  run_step bench bench env AEM_BENCH_GPU_T=16384 "$BIN/loss_head" --bench --warm-up-time 1 --measurement-time 3 cuda
  # T ≈ 4096 · 4.5 rows ≈ 18,400 at V = 151,936: T·V ≈ 2.8·10^9 > 2^31 (5.6 GB of f16 logits).
  run_step big big bash -c "
    '$AEM' demo-input --output '$OUT/big-in.safetensors' --responses 4096 --max-len 8 --vocab 151936 &&
    '$AEM' head --backend cuda --input '$OUT/big-in.safetensors' --output '$OUT/big-cuda.safetensors' &&
    '$AEM' head --backend cpu --input '$OUT/big-in.safetensors' --output '$OUT/big-cpu.safetensors' &&
    '$PY' '$ROOT/scripts/head_compare.py' '$OUT/big-cuda.safetensors' '$OUT/big-cpu.safetensors';
    rc=\$?; rm -f '$OUT'/big-*.safetensors; exit \$rc"
  if command -v compute-sanitizer >/dev/null 2>&1; then
    run_step sanitizer sanitizer bash -c "
      compute-sanitizer --tool memcheck --error-exitcode 1 '$BIN/gpu_parity' gpu_parity_every_plan &&
      compute-sanitizer --tool racecheck --error-exitcode 1 '$BIN/gpu_parity' gpu_parity_every_plan"
  else
    record sanitizer SKIP "compute-sanitizer not on PATH"
  fi
  rm -f "$OUT"/smoke-*.safetensors "$OUT"/bf16-*.safetensors
else
  for s in smoke bf16 parity model bench big sanitizer; do record "$s" SKIP "$why"; done
fi

echo "gpu_check: $fails failed; summary $SUMMARY"
[ "$fails" = 0 ]
