#!/usr/bin/env bash
# emu_selftest.sh — builds and runs the CPU emulator's selftest.
#   kernels/test/emu_selftest.sh              -O2 build, all checks, then the timing
#   ASAN=1 kernels/test/emu_selftest.sh       AddressSanitizer build: all checks must pass and the
#                                             planted out-of-bounds kernel must be reported
#   UCONTEXT=1 ...                            use the ucontext fiber switch instead of the asm one
#   EXHAUSTIVE=1 ...                          also float->half over all 2^32 floats vs F16C (~30 s)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="${OUT_DIR:-${TMPDIR:-/tmp}/aem_emu_selftest}"
mkdir -p "$out"
flags=(-std=c++17 -O2 -pthread -Wall -Wextra -I "$root/kernels/emu" -I "$root/kernels/test")
name=emu_selftest
if [[ "${UCONTEXT:-0}" == 1 ]]; then flags+=(-DAEM_EMU_UCONTEXT); name+=_uc; fi
if [[ "${ASAN:-0}" == 1 ]]; then flags+=(-fsanitize=address -fno-omit-frame-pointer -g); name+=_asan; fi
bin="$out/$name"

g++ "${flags[@]}" -c "$root/kernels/emu/emu_runtime.cpp" -o "$bin.runtime.o"
g++ "${flags[@]}" -DAEM_EMU -c "$root/kernels/test/emu_selftest_kernels.cpp" -o "$bin.kernels.o"
g++ "${flags[@]}" -c "$root/kernels/test/emu_selftest_main.cpp" -o "$bin.main.o"
g++ "${flags[@]}" "$bin.main.o" "$bin.kernels.o" "$bin.runtime.o" -o "$bin"

"$bin"

if [[ "${ASAN:-0}" == 1 ]]; then
  echo "--- planted out-of-bounds write (expect an AddressSanitizer report)"
  set +e
  "$bin" oob > "$out/oob.log" 2>&1
  rc=$?
  set -e
  grep -m1 -E "ERROR: AddressSanitizer: heap-buffer-overflow" "$out/oob.log" || true
  grep -m1 -E "#[0-9]+ .* in oob_write" "$out/oob.log" || true
  if [[ $rc -ne 0 && $rc -ne 3 ]] && grep -q "heap-buffer-overflow" "$out/oob.log" && grep -q "in oob_write" "$out/oob.log"; then
    echo "OK: ASan reported the out-of-bounds write in oob_write (exit code $rc)"
  else
    echo "FAILED: no ASan report for oob_write (exit code $rc); log: $out/oob.log"
    exit 1
  fi
else
  "$bin" bench
fi
if [[ "${EXHAUSTIVE:-0}" == 1 ]]; then "$bin" exhaustive; fi
