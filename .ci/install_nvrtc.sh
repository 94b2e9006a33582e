#!/usr/bin/env bash
# Install NVRTC (no GPU needed) from PyPI wheels into the git-ignored venv `.venv` at the repo root.
# Idempotent: re-running only checks the pinned versions. Prints the include dirs and the library.
#
# Pinned to CUDA 13.0.x: PTX from a newer NVRTC cannot be loaded by a 13.0 driver (driver 580).
# Usage: bash .ci/install_nvrtc.sh            (from anywhere; paths are resolved from this file)
# Env:   AEM_VENV=/path/to/venv               (default: <repo>/.venv)
#        PIP_FLAGS="..."                      (extra flags for pip, e.g. an index URL)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AEM_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

PINS=(
  "nvidia-cuda-nvrtc==13.0.88"
  "nvidia-cuda-runtime==13.0.96"
  "nvidia-cuda-cccl==13.0.85"
)

if [ ! -x "$VENV/bin/python" ]; then
  echo "install_nvrtc: creating venv $VENV" >&2
  "$PY" -m venv "$VENV"
fi

# Install only what is missing or at another version (pip check via `pip show` keeps reruns fast
# and offline-safe once installed).
need=()
for pin in "${PINS[@]}"; do
  name="${pin%%==*}"; want="${pin##*==}"
  have="$("$VENV/bin/python" -m pip show "$name" 2>/dev/null | awk '/^Version:/{print $2}')" || true
  if [ "$have" != "$want" ]; then need+=("$pin"); fi
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "install_nvrtc: installing ${need[*]}" >&2
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q ${PIP_FLAGS:-} "${need[@]}" >&2
fi

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
CU="$SITE/nvidia/cu13"
INC="$CU/include"
CCCL="$CU/include/cccl"
LIB="$CU/lib/libnvrtc.so.13"
for p in "$INC" "$CCCL" "$LIB"; do
  if [ ! -e "$p" ]; then echo "install_nvrtc: missing $p" >&2; exit 1; fi
done

# Stable, parseable output (KEY=VALUE), one per line.
echo "AEM_NVRTC_INCLUDE=$INC"
echo "AEM_NVRTC_CCCL_INCLUDE=$CCCL"
echo "AEM_NVRTC_LIB=$LIB"
echo "AEM_NVRTC_PYTHON=$VENV/bin/python"
