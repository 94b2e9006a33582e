#!/usr/bin/env python3
"""Compare two `aem head` output files (e.g. --backend cuda against --backend cpu).

    python3 scripts/head_compare.py GOT.safetensors WANT.safetensors [--rows 64]

Compares every per-row and per-response output in full and `dlogits` on a seeded sample of rows
(the whole T×V gradient of a large batch does not need reading twice). Prints the largest
absolute and relative differences per tensor; exits 1 when one exceeds the sanity bound below
(the parity suite holds the kernels to the exact tolerance rule; this checks a big end-to-end run
for gross errors: a wrong offset above 2^31, a lost row), 0 otherwise. Needs numpy.
"""
import json
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I32": np.int32, "I64": np.int64,
          "BF16": np.uint16}
# Sanity bounds: |got − want| ≤ ABS + REL·|want| (BF16: one bf16 ulp, 2^-7, relative, since the
# two sides may round an f32 value of the same size to neighbouring bf16 values).
ABS, REL = 1e-3, 1e-3
REL_BF16 = 2.0 ** -7


def open_st(path):
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    n = struct.unpack("<Q", bytes(mm[:8]))[0]
    header = json.loads(bytes(mm[8:8 + n]))
    header.pop("__metadata__", None)
    base = 8 + n

    def get(name, rows=None):
        h = header[name]
        dt = np.dtype(DTYPES[h["dtype"]])
        a, b = h["data_offsets"]
        shape = h["shape"]
        flat = mm[base + a:base + b].view(dt)
        arr = flat.reshape(shape) if shape else flat.reshape(())
        arr = arr if rows is None else arr[rows]
        if h["dtype"] == "BF16":  # numpy has no bfloat16: the bits are the top half of an f32
            arr = (np.asarray(arr).astype(np.uint32) << 16).view(np.float32)
        return arr

    return header, get


def main(argv):
    rows_n = 64
    if "--rows" in argv:
        i = argv.index("--rows")
        rows_n = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    got_path, want_path = argv[1], argv[2]
    hg, got = open_st(got_path)
    hw, want = open_st(want_path)
    bad = []
    for name in sorted(hw):
        if name not in hg:
            bad.append(f"{name}: missing from {got_path}")
            continue
        rows = None
        if name == "dlogits":
            t = hw[name]["shape"][0]
            rows = np.sort(np.random.default_rng(0).choice(t, size=min(rows_n, t), replace=False))
        g = np.asarray(got(name, rows), dtype=np.float64)
        w = np.asarray(want(name, rows), dtype=np.float64)
        if g.shape != w.shape:
            bad.append(f"{name}: shape {g.shape} vs {w.shape}")
            continue
        d = np.abs(g - w)
        rel_bound = REL_BF16 if hw[name]["dtype"] == "BF16" else REL
        worst = float(np.max(d - (ABS + rel_bound * np.abs(w)))) if d.size else -1.0
        rel = float(np.max(d / np.maximum(np.abs(w), 1e-30))) if d.size else 0.0
        what = f"{name:<18} max |Δ| {float(d.max()) if d.size else 0.0:.3e}  max rel {rel:.3e}"
        if rows is not None:
            what += f"  ({len(rows)} sampled rows)"
        print(what)
        if not np.all(np.isfinite(g)) or worst > 0:
            bad.append(f"{name}: beyond |Δ| ≤ {ABS} + {rel_bound}·|want|")
    for b in bad:
        print("FAIL", b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
