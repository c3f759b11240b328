"""Summarises bench/run.sh's runs: medians per variant, ratios to nginx, as JSON, Markdown and a PNG chart.

usage: report.py RUNS.jsonl OUT_PREFIX "machine description"
"""
import json
import statistics
import sys

runs_path, out, machine = sys.argv[1:4]
runs = [json.loads(line) for line in open(runs_path) if line.strip()]
order = []
for r in runs:
    if r["variant"] not in order:
        order.append(r["variant"])

variants = {}
for name in order:
    mine = [r for r in runs if r["variant"] == name]
    median = lambda f: statistics.median(f(r) for r in mine)
    variants[name] = {
        "rounds": len(mine),
        "requests": sum(r["requests"] for r in mine),
        "errors": sum(r["errors"] for r in mine),
        "rps": median(lambda r: r["rps"]),
        "rps_min": min(r["rps"] for r in mine),
        "rps_max": max(r["rps"] for r in mine),
        "p50_ms": median(lambda r: r["p50_ms"]),
        "p99_ms": median(lambda r: r["p99_ms"]),
        "cpu_s_per_1k_server": median(lambda r: r["cpu_s_per_1k"]["server"]),
        "cpu_s_per_1k_echo": median(lambda r: r["cpu_s_per_1k"]["echo"]),
        "cpu_s_per_1k_client": median(lambda r: r["cpu_s_per_1k"]["client"]),
        "cpu_s_per_1k_redis": median(lambda r: r["cpu_s_per_1k"]["redis"]),
        "rss_peak_mib": max(r["rss_peak_mib"] for r in mine),
        "statuses": sorted({s for r in mine for s in r["by_status"]}),
    }

ratios = {}
if "nginx" in variants:
    base = variants["nginx"]
    for name, v in variants.items():
        if name.startswith("hookgate") or name == "queue_accept":
            ratios[name] = {
                "throughput_vs_nginx": v["rps"] / base["rps"],
                "p99_vs_nginx": v["p99_ms"] / base["p99_ms"] if base["p99_ms"] else None,
            }

summary = {"machine": machine, "variants": variants, "ratios": ratios, "runs": runs}
json.dump(summary, open(out + ".json", "w"), indent=2)

lines = [
    f"# hookgate benchmark\n",
    f"{machine}. Medians over the rounds; variants interleaved round by round.\n",
    "| variant | req/s (min–max) | p50 ms | p99 ms | CPU s / 1k req: proxy | Redis | echo | client | peak RSS MiB | statuses |",
    "|---|---|---|---|---|---|---|---|---|---|",
]
for name, v in variants.items():
    lines.append(
        f"| {name} | {v['rps']:.0f} ({v['rps_min']:.0f}–{v['rps_max']:.0f}) | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | "
        f"{v['cpu_s_per_1k_server']:.3f} | {v['cpu_s_per_1k_redis']:.3f} | {v['cpu_s_per_1k_echo']:.3f} | "
        f"{v['cpu_s_per_1k_client']:.3f} | {v['rss_peak_mib']:.1f} | {', '.join(v['statuses'])} |"
    )
if ratios:
    lines += ["", "| ratio to nginx | throughput | p99 |", "|---|---|---|"]
    for name, r in ratios.items():
        p99 = f"{r['p99_vs_nginx']:.2f}x" if r["p99_vs_nginx"] else "-"
        lines.append(f"| {name} | {r['throughput_vs_nginx']:.2f}x | {p99} |")
open(out + ".md", "w").write("\n".join(lines) + "\n")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(variants)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.bar(names, [variants[n]["rps"] for n in names], color="#4477aa")
    left.errorbar(
        names,
        [variants[n]["rps"] for n in names],
        yerr=[
            [variants[n]["rps"] - variants[n]["rps_min"] for n in names],
            [variants[n]["rps_max"] - variants[n]["rps"] for n in names],
        ],
        fmt="none",
        ecolor="black",
        capsize=3,
    )
    left.set_title("Throughput (req/s, median and range)")
    right.bar(names, [variants[n]["p99_ms"] for n in names], color="#cc6677")
    right.set_title("p99 latency (ms, median)")
    for axis in (left, right):
        axis.tick_params(axis="x", rotation=25)
    fig.suptitle(machine, fontsize=9)
    fig.tight_layout()
    fig.savefig(out + ".png", dpi=110)
except ImportError:
    print("report: matplotlib is not installed; no chart (pip install matplotlib)", file=sys.stderr)
