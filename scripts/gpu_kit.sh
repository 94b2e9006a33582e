#!/usr/bin/env bash
# Builds the GPU check kit: `aem` (cubins for sm_80/sm_90 and PTX embedded through NVRTC), the GPU
# test binaries and the loss-head bench, with scripts/gpu_check.sh as run.sh, into one folder that
# runs on a machine with only the NVIDIA driver (no Rust toolchain, no CUDA toolkit).
#
#   bash scripts/gpu_kit.sh [KIT_DIR]     (default gpu-kit/, git-ignored)
#   bash gpu-kit/run.sh                   on the GPU machine (or here: every GPU step says why it skips)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KIT="${1:-$ROOT/gpu-kit}"
cd "$ROOT"

# NVRTC at build time, so build.rs embeds cubins and PTX (a build without them could only run
# through the runtime compile, which needs NVRTC on the GPU machine).
bash .ci/install_nvrtc.sh > /dev/null

mkdir -p "$KIT/bin" "$KIT/scripts"
cargo build --release --bin aem
cp target/release/aem "$KIT/bin/aem"

# Test and bench executables: cargo names them with a hash; its JSON messages say which file.
list_exes() {
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])
'
}
cargo test --release --no-run --message-format=json \
  --test gpu_parity --test model_device --test train_device | list_exes |
  while read -r name exe; do cp "$exe" "$KIT/bin/$name"; done
cargo bench --no-run --message-format=json --bench loss_head | list_exes |
  while read -r name exe; do [ "$name" = loss_head ] && cp "$exe" "$KIT/bin/loss_head"; done

cp scripts/gpu_check.sh "$KIT/run.sh"
cp scripts/head_compare.py "$KIT/scripts/head_compare.py"
"$KIT/bin/aem" doctor --no-compile | grep -E '^  |cubin' > "$KIT/EMBEDDED.txt" || true
du -sh "$KIT"
echo "gpu_kit: $KIT (run: bash $KIT/run.sh)"
