"""Builds results/experiment/REPORT.md (and plots) from the committed run files.

Called by `python3 scripts/experiment.py report`. Every number in the report is computed here
from results/experiment/runs/<env>/<arm>-s<seed>/{summary.json, metrics.jsonl.gz, eval.json,
probe-<iteration>.json}; a comparison uses the seeds for which both arms are finished.
Statistics as pre-registered in PLAN.md: paired differences, 95% t-intervals, paired t-test,
exact two-sided sign test, Holm across the two environments for the primary comparison.
Plots need matplotlib (`python3 -m venv .venv-report && .venv-report/bin/pip install
matplotlib==3.9.2`; experiment.py uses that interpreter when it exists); without it the report
says so and has none.
"""
import gzip
import json
import math
import os
import statistics

PRIMARY_FAMILY = [("keyrooms", "grpo-aem", "grpo"), ("foglake", "grpo-aem", "grpo")]
OTHER = [
    ("keyrooms", "grpo-shuffled", "grpo"),
    ("keyrooms", "grpo-reversed", "grpo"),
    ("keyrooms", "grpo-aem", "grpo-shuffled"),
    ("keyrooms", "gigpo-aem", "gigpo"),
]
MECHANISM = ("keyrooms", "grpo-aem-neg", "grpo-aem-pos")
THRESHOLD = {"keyrooms": 0.8, "foglake": 0.8}


# ---- statistics (standard library only) ----

def betacf(a, b, x):
    """Continued fraction of the regularised incomplete beta (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((a + m2 - 1) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        de = d * c
        h *= de
        if abs(de - 1.0) < 1e-15:
            break
    return h


def betai(a, b, x):
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(lbt) * betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * betacf(b, a, 1 - x) / b


def t_two_sided_p(t, df):
    return betai(df / 2.0, 0.5, df / (df + t * t))


def t_crit(df, level=0.95):
    lo, hi = 0.0, 1000.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_two_sided_p(mid, df) > 1 - level:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def sign_test(d):
    n = sum(1 for x in d if x != 0)
    k = sum(1 for x in d if x > 0)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(d):
    n = len(d)
    m = statistics.mean(d) if d else float("nan")
    if n < 2:
        return {"n": n, "mean": m, "ci": float("nan"), "p_t": float("nan"), "pos": sum(x > 0 for x in d),
                "neg": sum(x < 0 for x in d), "p_sign": sign_test(d)}
    sd = statistics.stdev(d)
    se = sd / math.sqrt(n)
    t = m / se if se > 0 else (math.inf if m != 0 else 0.0)
    return {"n": n, "mean": m, "ci": t_crit(n - 1) * se, "p_t": t_two_sided_p(t, n - 1) if math.isfinite(t) else 0.0,
            "pos": sum(x > 0 for x in d), "neg": sum(x < 0 for x in d), "p_sign": sign_test(d)}


def decide(s, p_adj=None):
    lo, hi = s["mean"] - s["ci"], s["mean"] + s["ci"]
    if not math.isfinite(s["ci"]):
        return "too few seeds"
    if lo > 0 and s["pos"] > s["n"] / 2 and (p_adj is None or p_adj < 0.05):
        return "helps"
    if hi < 0 and s["neg"] > s["n"] / 2:
        return "hurts"
    if lo >= -0.03 and hi <= 0.03:
        return "no effect"
    return "inconclusive"


def holm(ps):
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    adj, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        adj[i] = running
    return adj


# ---- run files ----

def load_runs(root, grid):
    runs = {}
    for rid, env, arm, seed in grid:
        d = os.path.join(root, "results", "experiment", "runs", rid)
        sp = os.path.join(d, "summary.json")
        if not os.path.exists(sp):
            continue
        with gzip.open(os.path.join(d, "metrics.jsonl.gz"), "rt") as f:
            recs = [json.loads(l) for l in f if l.strip()]
        ev = json.load(open(os.path.join(d, "eval.json")))
        probes = {}
        for name in os.listdir(d):
            if name.startswith("probe-") and name.endswith(".json"):
                probes[int(name[6:-5])] = json.load(open(os.path.join(d, name)))
        runs[(env, arm, seed)] = {"summary": json.load(open(sp)), "recs": recs, "eval": ev, "probes": probes}
    return runs


def metrics_of(env, run):
    recs = run["recs"]
    rl = [r for r in recs if r.get("phase") == "rl"]
    evals = [r for r in rl if r.get("heldout_success") is not None]
    final = max(evals, key=lambda r: r["step"]) if evals else {}
    ev = {(r["split"], r["mode"]): r["success"] for r in run["eval"]}
    reach = next((r["step"] for r in evals if r["heldout_success"] >= THRESHOLD[env]), None)
    ef = [r["entropy_free"] for r in rl if r.get("entropy_free") is not None]
    return {
        "primary": statistics.mean(r["heldout_success"] for r in evals) if evals else float("nan"),
        "final_sampled": final.get("heldout_success", float("nan")),
        "final_greedy": final.get("heldout_greedy", float("nan")),
        "ood_greedy": ev.get(("ood", "greedy"), float("nan")),
        "ood_sampled": ev.get(("ood", "sampled"), float("nan")),
        "iters_to_threshold": reach if reach is not None else 451,
        "entropy_free_mean": statistics.mean(ef) if ef else float("nan"),
        "update_s": statistics.mean(r["update_s"] for r in rl if r.get("update_s") is not None),
        "sample_s": statistics.mean(r["sample_s"] for r in rl if r.get("sample_s") is not None),
    }


def compare(runs, env, a, b, key):
    seeds = sorted(s for (e, arm, s) in runs if e == env and arm == a and (env, b, s) in runs)
    d = [metrics_of(env, runs[(env, a, s)])[key] - metrics_of(env, runs[(env, b, s)])[key] for s in seeds]
    ma = [metrics_of(env, runs[(env, a, s)])[key] for s in seeds]
    mb = [metrics_of(env, runs[(env, b, s)])[key] for s in seeds]
    return seeds, ma, mb, d


def fmt_ci(s):
    return f"{s['mean']:+.3f} ± {s['ci']:.3f}" if math.isfinite(s["ci"]) else f"{s['mean']:+.3f} (n = {s['n']})"


def mean_or_nan(x):
    return statistics.mean(x) if x else float("nan")


def main(root, grid):
    out = os.path.join(root, "results", "experiment")
    runs = load_runs(root, grid)
    done = len(runs)
    lines = ["# AEM experiment — report", "",
             f"Built by `python3 scripts/experiment.py report` from the {done} finished runs of {len(grid)} "
             "in `results/experiment/runs/` (pre-registration: [`PLAN.md`](PLAN.md)). Every number below is "
             "computed from those files by `scripts/experiment_report.py`.", ""]
    commits = sorted({r["summary"].get("commit", "?") for r in runs.values()})
    lines += [f"Commits that trained these runs: {', '.join(commits)}.", ""]

    # Primary family with Holm.
    lines += ["## Primary: held-out sampled success averaged over the in-run evaluations (iterations 25–450)", "",
              "| environment | comparison | seeds | +AEM arm | base arm | paired d (95% CI) | t-test p | Holm p | d > 0 | sign p | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    fam = []
    for env, a, b in PRIMARY_FAMILY:
        seeds, ma, mb, d = compare(runs, env, a, b, "primary")
        fam.append((env, a, b, seeds, ma, mb, paired(d)))
    ps = [f[-1]["p_t"] if math.isfinite(f[-1]["p_t"]) else 1.0 for f in fam]
    adj = holm(ps)
    summary = {"primary": []}
    for (env, a, b, seeds, ma, mb, s), p_adj in zip(fam, adj):
        verdict = decide(s, p_adj) if seeds else "not run yet"
        lines.append(f"| {env} | {a} − {b} | {len(seeds)} | {mean_or_nan(ma):.3f} | {mean_or_nan(mb):.3f} | "
                     f"{fmt_ci(s)} | {s['p_t']:.3f} | {p_adj:.3f} | {s['pos']}/{s['n']} | {s['p_sign']:.3f} | **{verdict}** |")
        summary["primary"].append({"env": env, "a": a, "b": b, "seeds": seeds, "a_vals": ma, "b_vals": mb, **s,
                                   "p_holm": p_adj, "verdict": verdict})
    lines += [""]

    # Secondary metrics for every comparison.
    keys = [("primary", "mean in-run held-out sampled"), ("final_sampled", "final held-out sampled"),
            ("final_greedy", "final held-out greedy"), ("ood_greedy", "OOD greedy (aem eval, 256)"),
            ("ood_sampled", "OOD sampled (aem eval, 256)"), ("iters_to_threshold", "iterations to 0.8 held-out sampled (451 = never)"),
            ("entropy_free_mean", "mean free-token entropy over training")]
    lines += ["## All comparisons (unadjusted unless in the primary table)", ""]
    summary["comparisons"] = []
    for env, a, b in [(e, x, y) for e, x, y in PRIMARY_FAMILY] + OTHER + [MECHANISM]:
        seeds = compare(runs, env, a, b, "primary")[0]
        lines += [f"### {env}: {a} − {b} ({len(seeds)} paired seeds: {seeds})", ""]
        if not seeds:
            lines += ["Not run yet.", ""]
            continue
        lines += ["| metric | " + a + " | " + b + " | paired d (95% CI) | d > 0 | sign p | verdict |", "|---|---|---|---|---|---|---|"]
        for k, name in keys:
            _, ma, mb, d = compare(runs, env, a, b, k)
            s = paired(d)
            if (env, a, b) == MECHANISM:
                # The mechanism's pre-registered prediction is about entropy, not success: the
                # decision rule (helps / hurts) does not apply to this pair of arms.
                verdict = ("" if k != "entropy_free_mean" else
                           "predicted d > 0 on every seed: " + ("holds" if s["pos"] == s["n"] else "fails"))
            else:
                verdict = decide(s) if k == "primary" else ""
            lines.append(f"| {name} | {mean_or_nan(ma):.3f} | {mean_or_nan(mb):.3f} | {fmt_ci(s)} | {s['pos']}/{s['n']} | "
                         f"{s['p_sign']:.3f} | {verdict} |")
            summary["comparisons"].append({"env": env, "a": a, "b": b, "metric": k, "seeds": seeds, "a_vals": ma,
                                           "b_vals": mb, **s})
        lines += [""]

    # Probe.
    lines += ["## Proxy validity (`aem probe`): corr(α − 1, −(S − H_resp)) on held-out states", "",
              "32 held-out tasks × 8 episodes per checkpoint, K = 16 alternatives per state; mean over the probed "
              "runs (grpo and grpo-aem, seeds 0–1) at each iteration; in brackets the range over runs. "
              "Sign: fraction of responses with sign(α − 1) = sign(−r) among α ≠ 1. At iteration 0 the two arms of a "
              "seed hold the same model, so their probes coincide.", ""]
    summary["probe"] = []
    for env in ["keyrooms", "foglake"]:
        probed = {k: v for k, v in runs.items() if k[0] == env and v["probes"]}
        if not probed:
            continue
        its = sorted({i for v in probed.values() for i in v["probes"]})
        variants = [(r["proxy"], r["scope"]) for r in next(iter(probed.values()))["probes"][its[0]]["rows"]]
        lines += [f"### {env} ({len(probed)} runs)", "",
                  "| proxy | group | " + " | ".join(f"iter {i}" for i in its) + " | sign agree (mean) | in guarded groups (mean) |",
                  "|---|---|" + "---|" * len(its) + "---|---|"]
        for proxy, scope in variants:
            cells, signs, guards = [], [], []
            for i in its:
                cs = []
                for v in probed.values():
                    p = v["probes"].get(i)
                    if p:
                        row = next(r for r in p["rows"] if r["proxy"] == proxy and r["scope"] == scope)
                        cs.append(row["corr"])
                        signs.append(row["sign_agree"])
                        guards.append(row["guarded"])
                        summary["probe"].append({"env": env, "iter": i, "proxy": proxy, "scope": scope,
                                                 "corr": row["corr"], "sign_agree": row["sign_agree"],
                                                 "guarded": row["guarded"]})
                cells.append(f"{mean_or_nan(cs):+.2f} [{min(cs):+.2f}, {max(cs):+.2f}]" if cs else "—")
            lines.append(f"| {proxy} | {scope} | " + " | ".join(cells) + f" | {mean_or_nan(signs):.2f} | {mean_or_nan(guards):.2f} |")
        ff = [p["free_token_frac"] for v in probed.values() for p in v["probes"].values()]
        lines += ["", f"Free tokens (≥ 2 valid choices): {100 * mean_or_nan(ff):.0f}% of response tokens (mean over probes).", ""]

    # Cost.
    lines += ["## Cost: step time of paired runs (both arms ran side by side, 2 at a time on 2 cores)", "",
              "| environment | arm | runs | update s / iteration | sampling s / iteration |", "|---|---|---|---|---|"]
    for env in ["keyrooms", "foglake"]:
        for arm in ["grpo", "grpo-aem", "gigpo", "gigpo-aem"]:
            ms = [metrics_of(env, v) for (e, a, s), v in runs.items() if e == env and a == arm]
            if ms:
                lines.append(f"| {env} | {arm} | {len(ms)} | {mean_or_nan([m['update_s'] for m in ms]):.3f} | "
                             f"{mean_or_nan([m['sample_s'] for m in ms]):.3f} |")
    lines += [""]

    plots = make_plots(out, runs)
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    else:
        lines += ["(No plots: matplotlib is not installed here; `pip install matplotlib` and rerun `report`.)", ""]

    notes = os.path.join(out, "NOTES.md")
    if os.path.exists(notes):
        lines += [open(notes).read()]
    with open(os.path.join(out, "REPORT.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print("\n".join(lines[:40]))


def make_plots(out, runs):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    pairs = [(e, a, b) for e, a, b in PRIMARY_FAMILY + OTHER + [MECHANISM]]
    for env, a, b in pairs:
        if not all(any(k[0] == env and k[1] == x for k in runs) for x in (a, b)):
            continue
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for arm, col in [(a, "tab:red"), (b, "tab:blue")]:
            rs = [v for (e, x, s), v in runs.items() if e == env and x == arm]
            if not rs:
                continue
            for v in rs:
                ev = [(r["step"], r["heldout_success"]) for r in v["recs"] if r.get("heldout_success") is not None]
                axes[0].plot(*zip(*ev), color=col, alpha=0.35)
                en = [(r["step"], r["entropy_free"]) for r in v["recs"] if r.get("entropy_free") is not None]
                axes[1].plot(*zip(*en), color=col, alpha=0.35)
                al = [(r["step"], r["alpha_max"] - r["alpha_min"], r["guard_frac"]) for r in v["recs"]
                      if r.get("alpha_max") is not None]
                if al:
                    axes[2].plot([x[0] for x in al], [x[1] for x in al], color=col, alpha=0.35)
                    axes[2].plot([x[0] for x in al], [x[2] for x in al], color=col, alpha=0.35, linestyle=":")
            axes[0].plot([], [], color=col, label=f"{arm} ({len(rs)} seeds)")
        axes[0].set_title(f"{env}: held-out sampled success")
        axes[1].set_title("free-token entropy (nats)")
        axes[2].set_title("α max − min (solid), guard fraction (dotted)")
        axes[0].legend()
        for ax in axes:
            ax.set_xlabel("iteration")
        name = f"{env}-{a}-vs-{b}.png"
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=80)
        plt.close(fig)
        made.append(name)
    # Probe over training.
    for env in ["keyrooms", "foglake"]:
        probed = {k: v for k, v in runs.items() if k[0] == env and v["probes"]}
        if not probed:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        variants = [("mean", "task"), ("free-mean", "task"), ("free-mean", "anchor"), ("sum", "anchor"),
                    ("free-fraction", "task")]
        for proxy, scope in variants:
            its = sorted({i for v in probed.values() for i in v["probes"]})
            ys = []
            for i in its:
                cs = [next(r["corr"] for r in v["probes"][i]["rows"] if r["proxy"] == proxy and r["scope"] == scope)
                      for v in probed.values() if i in v["probes"]]
                ys.append(statistics.mean(cs))
            ax.plot(its, ys, marker="o", label=f"{proxy} / {scope}")
        ax.axhline(0.63, color="grey", linestyle="--", label="paper (0.63)")
        ax.axhline(0.0, color="black", linewidth=0.5)
        ax.set_xlabel("iteration")
        ax.set_ylabel("corr(α − 1, −(S − H_resp))")
        ax.set_title(f"{env}: proxy validity over training")
        ax.legend(fontsize=7)
        name = f"{env}-probe.png"
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=80)
        plt.close(fig)
        made.append(name)
    return made
