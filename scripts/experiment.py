#!/usr/bin/env python3
"""The AEM experiment of results/experiment/PLAN.md: runs the grid and rebuilds the report.

  python3 scripts/experiment.py run [--jobs 2] [--only PREFIX]   train, probe, evaluate (resumable)
  python3 scripts/experiment.py status                           what is done, what is left
  python3 scripts/experiment.py report                           REPORT.md and plots from results/

`run` pins the grid to one commit (results/experiment/COMMIT, written by the first run) and
builds that commit's release binary once (runs/experiment/bin/aem-<commit>; from a worktree when
HEAD has moved on), so every run of the grid, across sittings, comes from one build; every run
records the commit that trained it. Work happens in runs/experiment/<id>/ (not committed); a finished run's files are
copied to results/experiment/runs/<id>/ (metrics and per-response rows gzipped), its
summary.json last, so a run is done exactly when that file exists. A killed grid is started
again with the same command: finished runs are skipped, an unfinished one continues from its
last checkpoint (`aem train --resume`, bit-identical), a missing probe or evaluation is redone.
Standard library only; the report's plots need matplotlib in .venv-report (see `report`).
"""
import argparse
import gzip
import json
import math
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "runs", "experiment")
RESULTS = os.path.join(ROOT, "results", "experiment")

ENVS = {
    "keyrooms": ["--level", "keyrooms-train", "--ood-level", "keyrooms-hard"],
    "foglake": ["--level", "foglake-proto", "--ood-level", "foglake-hard"],
}
ARMS = {
    "grpo": ["--advantage", "grpo", "--aem", "false"],
    "grpo-aem": ["--advantage", "grpo", "--aem", "true"],
    "grpo-shuffled": ["--advantage", "grpo", "--aem", "true", "--aem-map", "shuffled"],
    "grpo-reversed": ["--advantage", "grpo", "--aem", "true", "--aem-map", "reversed"],
    "gigpo": ["--advantage", "gigpo", "--aem", "false"],
    "gigpo-aem": ["--advantage", "gigpo", "--aem", "true"],
    "grpo-aem-pos": ["--advantage", "grpo", "--aem", "true", "--aem-only", "pos"],
    "grpo-aem-neg": ["--advantage", "grpo", "--aem", "true", "--aem-only", "neg"],
}
STEPS = 450
PROBE_AT = [0, 50, 150, 450]
PROBED = {("keyrooms", "grpo"), ("keyrooms", "grpo-aem"), ("foglake", "grpo"), ("foglake", "grpo-aem")}
PROBE_SEEDS = {0, 1}
EVAL_TASKS = 256


def grid():
    """The runs, in the plan's order: (id, env, arm, seed)."""
    runs = []

    def pair(env, arms, seeds):
        for s in seeds:
            for a in arms:
                runs.append((f"{env}/{a}-s{s}", env, a, s))

    pair("keyrooms", ["grpo", "grpo-aem"], range(6))
    pair("foglake", ["grpo", "grpo-aem"], range(6))
    pair("keyrooms", ["grpo-shuffled", "grpo-reversed"], range(6))
    pair("keyrooms", ["gigpo", "gigpo-aem"], range(5))
    pair("keyrooms", ["grpo-aem-pos", "grpo-aem-neg"], range(3))
    return runs


def stops(env, arm, seed):
    return PROBE_AT if (env, arm) in PROBED and seed in PROBE_SEEDS else [STEPS]


def commit():
    return subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()


def binary():
    """The release binary of the grid's pinned commit (results/experiment/COMMIT, written by the
    first `run`), built once into runs/experiment/bin/aem-<commit>; a later HEAD builds the pinned
    commit in a worktree, so every run of the grid comes from one build."""
    pin = os.path.join(RESULTS, "COMMIT")
    if not os.path.exists(pin):
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "build.rs",
                                "kernels", "Cargo.toml", "Cargo.lock"],
                               capture_output=True, text=True, check=True).stdout.strip()
        if dirty:
            sys.exit("experiment: the source tree has uncommitted changes; commit them first "
                     "(the grid is pinned to one commit)")
        with open(pin, "w") as f:
            f.write(commit() + "\n")
    c = open(pin).read().strip()
    path = os.path.join(WORK, "bin", f"aem-{c}")
    if not os.path.exists(path):
        src = ROOT
        if not commit().startswith(c):
            src = os.path.join(WORK, f"src-{c}")
            if not os.path.exists(src):
                subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", src, c], check=True)
        subprocess.run(["cargo", "build", "--release", "-q", "--bin", "aem"], cwd=src, check=True,
                       env={**os.environ, "CARGO_TARGET_DIR": os.path.join(ROOT, "target", "experiment")})
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, "target", "experiment", "release", "aem"), path + ".tmp")
        os.replace(path + ".tmp", path)
    return path, c


def sh(cmd, log):
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                           env={**os.environ, "RAYON_NUM_THREADS": os.environ.get("RAYON_NUM_THREADS", "1")})
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode} (log {log})")


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def gzip_copy(src, dst):
    tmp = dst + ".tmp"
    with open(src, "rb") as f, open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as g:
        shutil.copyfileobj(f, g)
    os.replace(tmp, dst)


def do_run(run, aem, rev, lock):
    rid, env, arm, seed = run
    out = os.path.join(RESULTS, "runs", rid)
    if os.path.exists(os.path.join(out, "summary.json")):
        return rid, "done before"
    work = os.path.join(WORK, rid)
    os.makedirs(work, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    log = os.path.join(work, "log.txt")
    for stop in stops(env, arm, seed):
        probe = os.path.join(out, f"probe-{stop}.json")
        if stop != STEPS and os.path.exists(probe):
            continue
        if os.path.exists(os.path.join(work, "config.toml")):
            cmd = [aem, "train", "--resume", work, "--quiet", "--until", str(stop)]
        else:
            cmd = [aem, "train", *ENVS[env], *ARMS[arm], "--seed", str(seed), "--backend", "cpu",
                   "--responses-every", "25", "--quiet", "--out", work, "--until", str(stop)]
        sh(cmd, log)
        if (env, arm) in PROBED and seed in PROBE_SEEDS and not os.path.exists(probe):
            sh([aem, "probe", "--checkpoint", work, "--backend", "cpu", "--quiet", "--json", probe], log)
    ev = os.path.join(out, "eval.json")
    if not os.path.exists(ev):
        sh([aem, "eval", "--checkpoint", work, "--tasks", str(EVAL_TASKS), "--backend", "cpu",
            "--quiet", "--json", ev], log)
    shutil.copy2(os.path.join(work, "config.toml"), os.path.join(out, "config.toml"))
    gzip_copy(os.path.join(work, "metrics.jsonl"), os.path.join(out, "metrics.jsonl.gz"))
    if os.path.exists(os.path.join(work, "responses.tsv")):
        gzip_copy(os.path.join(work, "responses.tsv"), os.path.join(out, "responses.tsv.gz"))
    summary = json.load(open(os.path.join(work, "summary.json")))
    summary["commit"] = rev
    summary["id"] = rid
    write_json(os.path.join(out, "summary.json"), summary)
    with lock:
        print(f"experiment: {rid} done", flush=True)
    return rid, "done"


def cmd_run(a):
    aem, rev = binary()
    runs = [r for r in grid() if not a.only or r[0].startswith(a.only)]
    lock = threading.Lock()
    print(f"experiment: {len(runs)} runs, binary {aem}, {a.jobs} at a time", flush=True)
    failed = []
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        futs = {pool.submit(do_run, r, aem, rev, lock): r for r in runs}
        for f, r in futs.items():
            try:
                f.result()
            except Exception as e:  # one run's failure must not stop the others
                failed.append((r[0], str(e)))
                print(f"experiment: {r[0]} FAILED: {e}", flush=True)
    if failed:
        sys.exit(f"experiment: {len(failed)} runs failed")


def cmd_status(_a):
    runs = grid()
    done = [r for r in runs if os.path.exists(os.path.join(RESULTS, "runs", r[0], "summary.json"))]
    print(f"{len(done)}/{len(runs)} runs done")
    for r in runs:
        if r not in done:
            print("  left:", r[0])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--jobs", type=int, default=2)
    r.add_argument("--only", default="", help="only runs whose id starts with this")
    sub.add_parser("status")
    sub.add_parser("report")
    a = p.parse_args()
    if a.cmd == "run":
        cmd_run(a)
    elif a.cmd == "status":
        cmd_status(a)
    else:
        venv = os.path.join(ROOT, ".venv-report", "bin", "python")
        if os.path.exists(venv) and os.path.realpath(sys.prefix) != os.path.realpath(os.path.dirname(os.path.dirname(venv))):
            # The plots need matplotlib: `python3 -m venv .venv-report &&
            # .venv-report/bin/pip install matplotlib==3.9.2` (the report is built without them otherwise).
            os.execv(venv, [venv, os.path.abspath(__file__), "report"])
        import experiment_report  # noqa: E402  (scripts/experiment_report.py)
        experiment_report.main(ROOT, grid())


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
