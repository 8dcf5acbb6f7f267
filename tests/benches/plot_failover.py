#!/usr/bin/env python3
"""Draws target/bench/failover.png from target/bench/report.json (the failover bench).

One panel per scenario: the shared failover milestones as horizontal bars, p50 with a
p99 whisker, ours next to the MMM-defaults profile, on a log time axis (the two differ
by orders of magnitude). `cargo xtask bench failover` runs it; needs python3-matplotlib.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")  # no display on a server
import matplotlib.pyplot as plt  # noqa: E402


def milestones(report, scenario, profile):
    for s in report["series"]:
        if s["scenario"] == scenario and s["profile"] == profile:
            return {m["milestone"]: m["summary"] for m in s["milestones_ms"]}, s
    return {}, None


def main(src, dst):
    with open(src) as f:
        report = json.load(f)
    names = report["milestones"]
    scenarios = []
    for s in report["series"]:
        if (s["scenario"], s["title"]) not in scenarios:
            scenarios.append((s["scenario"], s["title"]))
    colours = {"ours": "#1f77b4", "mmm": "#d62728"}
    labels = {"ours": "ours", "mmm": "MMM defaults, same binaries"}
    fig, axes = plt.subplots(
        len(scenarios), 1, figsize=(12, 3.2 * len(scenarios)), squeeze=False
    )
    for ax, (scenario, title) in zip(axes[:, 0], scenarios):
        rows = list(range(len(names)))
        runs = []
        for offset, profile in ((-0.2, "ours"), (0.2, "mmm")):
            got, series = milestones(report, scenario, profile)
            if series is None:
                continue
            runs.append(f"{labels[profile]}: {len(series['runs'])} runs")
            p50 = [max((got.get(n) or {}).get("p50", 0), 1) for n in names]
            p99 = [max((got.get(n) or {}).get("p99", 0), 1) for n in names]
            ys = [r + offset for r in rows]
            ax.barh(ys, p50, height=0.38, color=colours[profile], label=labels[profile])
            ax.errorbar(
                p99, ys, xerr=[[max(b - a, 0) for a, b in zip(p50, p99)], [0] * len(p99)],
                fmt="none", ecolor="black", elinewidth=0.8, capsize=2,
            )
            for y, v, top, n in zip(ys, p50, p99, names):
                # A switchover's "detection" is its command, at 0: no bar, no label.
                if got.get(n) and got[n]["p50"] > 0:
                    ax.text(top * 1.1, y, f"{v:.0f}", va="center", fontsize=7)
        ax.set_yticks(rows)
        ax.set_yticklabels(names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlim(1, 60000)
        ax.set_xlabel("ms after the event (log scale); bar p50, whisker to p99", fontsize=8)
        ratio = next(
            (r["ratio_p50"] for r in report["ratios_mmm_over_ours"]
             if r["scenario"] == scenario and r["ratio_p50"] is not None
             and r["milestone"].startswith("the retrying client")),
            None,
        )
        head = f"{title}" + (f": MMM / ours = {ratio:.0f}x (the retrying client's first write, p50)" if ratio else "")
        ax.set_title(head + "\n" + "; ".join(runs), fontsize=9)
        ax.grid(axis="x", which="both", alpha=0.3)
    m = report["machine"]
    fig.suptitle(
        f"mmm failover timelines, ours vs MMM defaults (kernel {m['kernel']}, {m['cores']} cores, revision {m['revision']})",
        fontsize=10,
    )
    handles, names_ = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names_, loc="upper right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(dst, dpi=110)
    print(f"written: {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
