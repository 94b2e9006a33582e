#!/usr/bin/env python3
"""Compile CUDA sources with NVRTC (no GPU, no nvcc) and check them: no errors, no warnings, no spills.

Usage:
    python3 tools/nvrtc_compile.py [--arch sm_80 --arch sm_90] [--out DIR] [--json REPORT.json]
                                   [-I DIR]... [-D NAME[=VAL]]... [--nvrtc-lib PATH]
                                   [--no-ptx] [--no-cubin] [-j N] FILE.cu [FILE.cu ...]

For each FILE and each --arch sm_XY (default: sm_80 and sm_90):
  - cubin: -arch=sm_XY        → DIR/<stem>.sm_XY.cubin   (ptxas -v log parsed per kernel)
  - PTX:   -arch=compute_XY   → DIR/<stem>.compute_XY.ptx
Options always passed: -std=c++17 --ptxas-options=-v -I <dir of FILE> -I <repo>/kernels
-I <wheel include> -I <wheel include>/cccl, plus the -I/-D given here.

Stdout (stable; parse it by splitting on whitespace, ignoring lines that start with '#'):
    # nvrtc <major>.<minor> <path of libnvrtc>
    # file kernel arch regs spill_stores spill_loads smem cmem stack barriers
    <file> <kernel> <arch> <regs> <spill_stores> <spill_loads> <smem> <cmem> <stack> <barriers>
    ...
    # ok <n> kernels            (or: # FAIL <n> problems)
Diagnostics (compile logs, reasons for failure) go to stderr.

The JSON report (--json) holds, per file stem and arch, the output paths, the full logs and
per-kernel {"registers", "spill_stores_bytes", "spill_loads_bytes", "smem_bytes", "cmem",
"cmem_banks", "stack_frame_bytes", "barriers"}, plus "ok" and the list of "problems".

Exit status: 0 clean; 1 a compile error, the word "warning" in any log, or any spill (ptxas
spill stores/loads > 0); 2 usage error or NVRTC/headers not found (a caller such as build.rs
may treat 2 as "skip: no NVRTC").

NVRTC is found at --nvrtc-lib, else $AEM_NVRTC_LIB, else <repo>/.venv (installed by
.ci/install_nvrtc.sh), else the running interpreter's site-packages, else the system library.
Headers: $AEM_NVRTC_INCLUDE, else <lib>/../include (and its cccl/ subdirectory).
Needs only the Python standard library (ctypes).
"""

import argparse
import ctypes
import ctypes.util
import glob
import json
import os
import re
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXIT_OK, EXIT_FAIL, EXIT_SETUP = 0, 1, 2


class SetupError(Exception):
    """NVRTC or its headers are missing, or the command line is wrong (exit status 2)."""


# ----------------------------------------------------------------------------------------------
# Locating NVRTC
# ----------------------------------------------------------------------------------------------

def _candidate_libs(explicit):
    if explicit:
        yield explicit
        return
    env = os.environ.get("AEM_NVRTC_LIB")
    if env:
        yield env
    for pattern in (
        os.path.join(REPO, ".venv", "lib", "python*", "site-packages", "nvidia", "cu13", "lib",
                     "libnvrtc.so.13"),
        os.path.join(REPO, ".venv", "lib", "python*", "site-packages", "nvidia", "cuda_nvrtc",
                     "lib", "libnvrtc.so.*"),
    ):
        yield from sorted(glob.glob(pattern))
    for key in ("purelib", "platlib"):
        site = sysconfig.get_paths().get(key)
        if site:
            yield from sorted(glob.glob(os.path.join(site, "nvidia", "cu13", "lib",
                                                     "libnvrtc.so.13")))
    found = ctypes.util.find_library("nvrtc")
    if found:
        yield found


def load_nvrtc(explicit):
    tried = []
    for path in _candidate_libs(explicit):
        tried.append(path)
        try:
            # NVRTC dlopens libnvrtc-builtins by soname at compile time; the wheel's directory is
            # not on the loader path, so load it first (RTLD_GLOBAL) from next to libnvrtc.
            d = os.path.dirname(path)
            for b in sorted(glob.glob(os.path.join(d, "libnvrtc-builtins.so.*"))) if d else []:
                ctypes.CDLL(b, mode=ctypes.RTLD_GLOBAL)
            lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        return lib, path
    raise SetupError("libnvrtc not found (tried: %s); run: bash .ci/install_nvrtc.sh"
                     % (", ".join(tried) or "nothing"))


def include_dirs(lib_path):
    dirs = []
    env = os.environ.get("AEM_NVRTC_INCLUDE")
    if env:
        dirs.append(env)
    else:
        real = os.path.realpath(lib_path) if os.path.isabs(lib_path) else lib_path
        for base in (os.path.dirname(lib_path), os.path.dirname(real)):
            inc = os.path.normpath(os.path.join(base, "..", "include"))
            if os.path.isfile(os.path.join(inc, "cuda_fp16.h")):
                dirs.append(inc)
                break
        cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
        if not dirs and cuda_home and os.path.isdir(os.path.join(cuda_home, "include")):
            dirs.append(os.path.join(cuda_home, "include"))
    if not dirs:
        raise SetupError("CUDA headers (cuda_fp16.h) not found next to %s; set AEM_NVRTC_INCLUDE"
                         % lib_path)
    cccl = os.path.join(dirs[0], "cccl")
    if os.path.isdir(cccl):
        dirs.append(cccl)
    return dirs


# ----------------------------------------------------------------------------------------------
# NVRTC through ctypes
# ----------------------------------------------------------------------------------------------

class Nvrtc:
    def __init__(self, lib):
        self.lib = lib
        c_size_p = ctypes.POINTER(ctypes.c_size_t)
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        lib.nvrtcGetErrorString.argtypes = [ctypes.c_int]
        lib.nvrtcVersion.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
        lib.nvrtcCreateProgram.argtypes = [
            ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
            ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p)]
        lib.nvrtcCompileProgram.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                            ctypes.POINTER(ctypes.c_char_p)]
        lib.nvrtcDestroyProgram.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        for name in ("nvrtcGetProgramLogSize", "nvrtcGetPTXSize", "nvrtcGetCUBINSize"):
            getattr(lib, name).argtypes = [ctypes.c_void_p, c_size_p]
        for name in ("nvrtcGetProgramLog", "nvrtcGetPTX", "nvrtcGetCUBIN"):
            getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_char_p]

    def version(self):
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "version")
        return major.value, minor.value

    def _err(self, code):
        return self.lib.nvrtcGetErrorString(code).decode(errors="replace")

    def _check(self, code, what):
        if code != 0:
            raise RuntimeError("nvrtc %s: %s" % (what, self._err(code)))

    def _blob(self, prog, size_fn, get_fn, text):
        size = ctypes.c_size_t()
        self._check(size_fn(prog, ctypes.byref(size)), "size")
        buf = ctypes.create_string_buffer(size.value)
        self._check(get_fn(prog, buf), "get")
        raw = buf.raw[: size.value]
        if text:
            return raw.rstrip(b"\0").decode(errors="replace")
        return raw

    def compile(self, source, name, options, want):
        """Returns (ok, log, output bytes or None). want: 'ptx' or 'cubin'."""
        prog = ctypes.c_void_p()
        self._check(self.lib.nvrtcCreateProgram(ctypes.byref(prog), source, name.encode(), 0,
                                                None, None), "create")
        try:
            opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            code = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            log = self._blob(prog, self.lib.nvrtcGetProgramLogSize, self.lib.nvrtcGetProgramLog,
                             True)
            if code != 0:
                return False, (log + "\n" + self._err(code)).strip(), None
            if want == "ptx":
                out = self._blob(prog, self.lib.nvrtcGetPTXSize, self.lib.nvrtcGetPTX, False)
                out = out.rstrip(b"\0")
            else:
                out = self._blob(prog, self.lib.nvrtcGetCUBINSize, self.lib.nvrtcGetCUBIN, False)
            return True, log, out
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


# ----------------------------------------------------------------------------------------------
# ptxas -v log
# ----------------------------------------------------------------------------------------------

RE_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
RE_PROPS = re.compile(r"Function properties for (\S+)")
RE_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
RE_USED = re.compile(r"Used (\d+) registers")
RE_BARRIERS = re.compile(r"used (\d+) barriers")
RE_SMEM = re.compile(r"(\d+) bytes smem")
RE_CMEM = re.compile(r"(\d+) bytes cmem\[(\d+)\]")


def parse_ptxas(log):
    """Per entry kernel: registers, spills, smem, cmem. Also the spills of non-inlined device
    functions (returned under their mangled name with "entry": False)."""
    funcs = {}
    current_entry = None
    props_for = None
    for line in log.splitlines():
        m = RE_ENTRY.search(line)
        if m:
            current_entry = m.group(1)
            funcs.setdefault(current_entry, _empty(True))
            continue
        m = RE_PROPS.search(line)
        if m:
            props_for = m.group(1)
            funcs.setdefault(props_for, _empty(props_for == current_entry))
            continue
        m = RE_FRAME.search(line)
        if m and props_for is not None:
            f = funcs[props_for]
            f["stack_frame_bytes"] = int(m.group(1))
            f["spill_stores_bytes"] = int(m.group(2))
            f["spill_loads_bytes"] = int(m.group(3))
            continue
        m = RE_USED.search(line)
        if m and current_entry is not None:
            f = funcs[current_entry]
            f["registers"] = int(m.group(1))
            b = RE_BARRIERS.search(line)
            f["barriers"] = int(b.group(1)) if b else 0
            s = RE_SMEM.search(line)
            f["smem_bytes"] = int(s.group(1)) if s else 0
            banks = {c.group(2): int(c.group(1)) for c in RE_CMEM.finditer(line)}
            f["cmem_banks"] = banks
            f["cmem"] = sum(banks.values())
    return funcs


def _empty(entry):
    return {"entry": entry, "registers": 0, "spill_stores_bytes": 0, "spill_loads_bytes": 0,
            "smem_bytes": 0, "cmem": 0, "cmem_banks": {}, "stack_frame_bytes": 0, "barriers": 0}


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="nvrtc_compile.py",
        description="Compile .cu files with NVRTC to cubin + PTX; fail on errors, warnings, spills.")
    ap.add_argument("sources", nargs="+", metavar="FILE.cu")
    ap.add_argument("--arch", action="append", default=[], metavar="sm_XY",
                    help="target, repeatable (default: sm_80 and sm_90)")
    ap.add_argument("--out", metavar="DIR", help="write <stem>.sm_XY.cubin, <stem>.compute_XY.ptx")
    ap.add_argument("--json", metavar="PATH", help="write the report here")
    ap.add_argument("-I", dest="includes", action="append", default=[], metavar="DIR")
    ap.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VAL]")
    ap.add_argument("--nvrtc-lib", metavar="PATH", help="libnvrtc.so to load")
    ap.add_argument("--no-ptx", action="store_true", help="skip the compute_XY PTX compile")
    ap.add_argument("--no-cubin", action="store_true", help="skip the sm_XY cubin compile")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    archs = args.arch or ["sm_80", "sm_90"]
    for a in archs:
        if not re.fullmatch(r"sm_\d+[a-z]?", a):
            raise SetupError("--arch %s: expected sm_XY (e.g. sm_80)" % a)
    args.arch = list(dict.fromkeys(archs))
    return args


def main(argv):
    try:
        args = parse_args(argv)
        lib, lib_path = load_nvrtc(args.nvrtc_lib)
        nv = Nvrtc(lib)
        version = nv.version()
        sys_includes = include_dirs(lib_path)
        sources = []
        for src in args.sources:
            if not os.path.isfile(src):
                raise SetupError("%s: no such file" % src)
            with open(src, "rb") as fh:
                sources.append((src, fh.read()))
    except SetupError as e:
        print("nvrtc_compile: %s" % e, file=sys.stderr)
        return EXIT_SETUP

    if args.out:
        os.makedirs(args.out, exist_ok=True)

    base_opts = ["-std=c++17", "--ptxas-options=-v"]
    base_opts += ["-D" + d for d in args.defines]

    jobs = []  # (src, stem, arch, kind, options)
    for src, _ in sources:
        stem = os.path.splitext(os.path.basename(src))[0]
        incs = [os.path.dirname(os.path.abspath(src)), os.path.join(REPO, "kernels")]
        incs += [os.path.abspath(i) for i in args.includes] + sys_includes
        inc_opts = ["-I" + i for i in dict.fromkeys(incs)]
        for arch in args.arch:
            num = arch[len("sm_"):]
            if not args.no_cubin:
                jobs.append((src, stem, arch, "cubin", base_opts + inc_opts + ["-arch=sm_" + num]))
            if not args.no_ptx:
                jobs.append((src, stem, arch, "ptx",
                             base_opts + inc_opts + ["-arch=compute_" + num]))
    text = dict(sources)

    def run(job):
        src, stem, arch, kind, opts = job
        return job, nv.compile(text[src], os.path.basename(src), opts, kind)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(run, jobs))

    report = {"nvrtc_version": "%d.%d" % version, "nvrtc_lib": lib_path, "archs": args.arch,
              "files": {}, "problems": []}
    problems = report["problems"]
    rows = []
    for (src, stem, arch, kind, opts), (ok, log, blob) in results:
        entry = report["files"].setdefault(stem, {"source": src, "archs": {}})
        a = entry["archs"].setdefault(arch, {"kernels": {}})
        a[kind + "_options"] = opts
        a[kind + "_log"] = log
        if not ok:
            problems.append("%s [%s %s]: compile error" % (src, arch, kind))
            print("---- %s [%s %s] compile error:\n%s" % (src, arch, kind, log), file=sys.stderr)
            continue
        if re.search(r"warning", log, re.IGNORECASE):
            problems.append("%s [%s %s]: warning in log" % (src, arch, kind))
            print("---- %s [%s %s] warnings:\n%s" % (src, arch, kind, log), file=sys.stderr)
        if args.out:
            name = "%s.%s.%s" % (stem, arch if kind == "cubin" else "compute_" + arch[3:], kind)
            path = os.path.join(args.out, name)
            with open(path, "wb") as fh:
                fh.write(blob)
            a[kind] = path
        if kind == "cubin":
            funcs = parse_ptxas(log)
            for fname, f in sorted(funcs.items()):
                if f["spill_stores_bytes"] or f["spill_loads_bytes"]:
                    problems.append("%s [%s] %s: spills %d B stores, %d B loads"
                                    % (src, arch, fname, f["spill_stores_bytes"],
                                       f["spill_loads_bytes"]))
                if f["entry"]:
                    a["kernels"][fname] = {k: v for k, v in f.items() if k != "entry"}
                    rows.append((stem, fname, arch, f))
                else:
                    a.setdefault("device_functions", {})[fname] = {
                        k: v for k, v in f.items() if k != "entry"}
            if not any(f["entry"] for f in funcs.values()):
                print("nvrtc_compile: %s [%s]: no kernels in the ptxas log" % (src, arch),
                      file=sys.stderr)

    report["ok"] = not problems
    print("# nvrtc %d.%d %s" % (version[0], version[1], lib_path))
    header = ("file", "kernel", "arch", "regs", "spill_stores", "spill_loads", "smem", "cmem",
              "stack", "barriers")
    table = [header] + [
        (stem, k, arch, f["registers"], f["spill_stores_bytes"], f["spill_loads_bytes"],
         f["smem_bytes"], f["cmem"], f["stack_frame_bytes"], f["barriers"])
        for stem, k, arch, f in sorted(rows, key=lambda r: (r[0], r[1], r[2]))]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    for i, r in enumerate(table):
        cells = [str(c).ljust(w) if j < 3 else str(c).rjust(w)
                 for j, (c, w) in enumerate(zip(r, widths))]
        line = "  ".join(cells).rstrip()
        print(("# " + line) if i == 0 else ("  " + line))
    if problems:
        for p in problems:
            print("nvrtc_compile: FAIL %s" % p, file=sys.stderr)
        print("# FAIL %d problems" % len(problems))
    else:
        print("# ok %d kernels" % len(rows))

    if args.json:
        d = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(d, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1, sort_keys=True)
            fh.write("\n")
    return EXIT_OK if not problems else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
