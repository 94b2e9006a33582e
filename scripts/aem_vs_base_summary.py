"""Summarises scripts/aem_vs_base.sh: per arm mean ± 95% CI over seeds, and paired differences."""
import glob, json, math, os, statistics, sys

out = sys.argv[1]
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def ci(xs):
    m = statistics.mean(xs)
    if len(xs) < 2:
        return m, float("nan")
    return m, T95.get(len(xs) - 1, 1.96) * statistics.stdev(xs) / math.sqrt(len(xs))


def load(arm):
    res = {}
    for f in glob.glob(os.path.join(out, f"{arm}-s*.eval.json")):
        seed = int(os.path.basename(f).split("-s")[1].split(".")[0])
        res[seed] = {(r["split"], r["mode"]): r["success"] for r in json.load(open(f))}
    return res


aem, base = load("aem"), load("base")
seeds = sorted(set(aem) & set(base))
rows, summary = [], {"seeds": seeds, "metrics": {}}
for key in [("held-out", "greedy"), ("held-out", "sampled"), ("ood", "greedy"), ("ood", "sampled")]:
    a = [aem[s][key] for s in seeds]
    b = [base[s][key] for s in seeds]
    d = [x - y for x, y in zip(a, b)]
    (ma, ea), (mb, eb), (md, ed) = ci(a), ci(b), ci(d)
    name = f"{key[0]} {key[1]}"
    summary["metrics"][name] = {"aem": a, "base": b, "aem_mean": ma, "aem_ci": ea, "base_mean": mb,
                                "base_ci": eb, "diff_mean": md, "diff_ci": ed}
    rows.append(f"| {name} | {ma:.3f} ± {ea:.3f} | {mb:.3f} ± {eb:.3f} | {md:+.3f} ± {ed:.3f} |")
md = [f"Seeds: {seeds} (paired). Mean ± 95% t-interval over seeds; 512 tasks per evaluation.", "",
      "| success | GiGPO + AEM | GiGPO | paired difference (AEM − base) |", "|---|---|---|---|", *rows]
open(os.path.join(out, "summary.md"), "w").write("\n".join(md) + "\n")
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print("\n".join(md))
