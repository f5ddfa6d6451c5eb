"""Tables and the plot of the seeds benchmark: per seed, and mean +- standard deviation over seeds.

Example:
    >>> mean_sd([1.0, 2.0, 3.0])
    '2.00 +- 1.00'
    >>> mean_sd([4.0])
    '4.00'
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Sequence

from seeds_common import TOLERANCE
from seeds_methods import Outcome

__all__ = ["aggregate", "curves", "mean_sd", "per_seed", "plot"]


def mean_sd(values: Sequence[float], fmt: str = ".2f", suffix: str = "") -> str:
    """``mean +- sample standard deviation`` (just the value for one sample; ``-`` for none)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:{fmt}}{suffix}"
    return f"{statistics.mean(values):{fmt}}{suffix} +- {statistics.stdev(values):{fmt}}"


def _line(cells: Sequence[str], widths: Sequence[int], left: Sequence[int] = (0, 1)) -> str:
    return " ".join(f"{c:<{w}}" if i in left else f"{c:>{w}}" for i, (c, w) in enumerate(zip(cells, widths))).rstrip()


def per_seed(outcomes: list[Outcome], match: float) -> str:
    """One seed: each method's result (within 1 point on validation) and its matched-compression accuracy."""
    head = ("method", "recipe", "val %", "test %", "compr<=1pt", "MACs red.", "params", "rounds", "ft ep",
            f"test@{match:g}x", "stop", "wall s")
    widths = (10, 24, 6, 6, 10, 9, 8, 6, 5, 10, 18, 7)
    rows = [_line(head, widths, (0, 1, 10)), "-" * (sum(widths) + len(widths) - 1)]
    for o in outcomes:
        r = o.best
        m = o.matched
        at = "-" if m is None else f"{m['test']:.2f}" + ("" if m["how"] == "interpolated" else f"@{m['compression']:.1f}x")
        rows.append(_line((o.method, o.label, f"{r['val']:.2f}", f"{r['test']:.2f}", f"{r['compression']:.2f}x",
                           f"{r['macs_red']:.2f}x", f"{r['params']:,}", str(o.rounds), str(o.epochs), at, o.stop,
                           f"{o.wall:.1f}"), widths, (0, 1, 10)))
    return "\n".join(rows)


def curves(outcomes: list[Outcome]) -> str:
    """Every point of every run: round (or ratio), params, compression, MACs, validation and test accuracy."""
    rows = []
    for o in outcomes:
        rows.append(f"{o.method} ({o.label}): round, params, compression, MACs red., val %, test %, accepted")
        for i, p in enumerate(o.curve):
            extra = f"  ratio {p['ratio']:.2f}" if "ratio" in p else ""
            if p.get("implanted"):
                extra += f", {p['implanted']} implanted"
            mark = "*" if i == o.result else " "
            rows.append(f" {mark}{p['round']:>5} {p['params']:>8,} {p['compression']:>7.2f}x {p['macs_red']:>7.2f}x "
                        f"{p['val']:>7.2f} {p['test']:>7.2f} {'yes' if p['accepted'] else 'no':>4}{extra}")
    return "\n".join(rows)


def aggregate(runs: dict[int, list[Outcome]], baselines: dict[int, dict], match: float) -> str:
    """Mean +- standard deviation over seeds of every method's result and matched accuracy."""
    seeds = sorted(runs)
    head = ("method", "compr<=1pt", "MACs red.", "test drop", f"test@{match:g}x", f"drop@{match:g}x", "ft ep")
    widths = (10, 15, 15, 15, 15, 15, 6)
    rows = [f"{len(seeds)} seed(s) {seeds}; baseline test accuracy "
            f"{mean_sd([baselines[s]['test'] for s in seeds])}%, validation "
            f"{mean_sd([baselines[s]['val'] for s in seeds])}%",
            _line(head, widths, (0,)), "-" * (sum(widths) + len(widths) - 1)]
    names = list(dict.fromkeys(o.method for s in seeds for o in runs[s]))
    for name in names:
        outs = {s: o for s in seeds for o in runs[s] if o.method == name}
        best = [o.best for o in outs.values()]
        drops = [baselines[s]["test"] - o.best["test"] for s, o in outs.items()]
        matched = [o.matched for o in outs.values()]
        at = [m["test"] if m else None for m in matched]
        at_drop = [baselines[s]["test"] - o.matched["test"] if o.matched else None for s, o in outs.items()]
        cell = mean_sd(at)
        sized = [m["compression"] for m in matched if m and m["how"] != "interpolated"]
        if sized:
            cell += f" ({mean_sd(sized, '.1f')}x)"
        missing = sum(m is None for m in matched)
        if missing:
            cell += f" [{missing} n/r]"
        rows.append(_line((name, mean_sd([b["compression"] for b in best], suffix="x"),
                           mean_sd([b["macs_red"] for b in best], suffix="x"), mean_sd(drops), cell, mean_sd(at_drop),
                           mean_sd([o.epochs for o in outs.values()], ".0f")), widths, (0,)))
    return "\n".join(rows)


def plot(runs: dict[int, list[Outcome]], baselines: dict[int, dict], match: float, path: Path, title: str) -> bool:
    """Left: test accuracy vs compression along each method's path (first seed); right: accuracy at ``match`` x."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    seeds = sorted(runs)
    first = runs[seeds[0]]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110, gridspec_kw={"width_ratios": [3, 2]})
    markers = ["o", "s", "^", "v", "D", "P", "X", "*"]
    colors = {}
    base = baselines[seeds[0]]["test"]
    for k, o in enumerate(first):
        pts = sorted(o.curve, key=lambda p: p["compression"]) if o.stop == "swept" else \
            [p for p in o.curve if p["accepted"] or "tolerance" in o.stop]
        line, = ax.plot([p["compression"] for p in pts], [p["test"] for p in pts], marker=markers[k % 8], ms=4,
                        lw=1.2, label=f"{o.method}: {o.best['compression']:.2f}x")
        colors[o.method] = line.get_color()
        ax.plot([o.best["compression"]], [o.best["test"]], marker=markers[k % 8], ms=10, mfc="none",
                color=line.get_color())
    ax.axhline(base - TOLERANCE, color="grey", ls="--", lw=1, label="baseline - 1 point")
    ax.axvline(match, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("compression (original / remaining params, log scale)")
    ax.set_ylabel("test accuracy (%)")
    lo = min(p["test"] for o in first for p in o.curve)
    ax.set_ylim(max(lo - 1.0, base - 12.0), min(100.0, base + 1.5))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left", fontsize=7, title=f"seed {seeds[0]}; circled: result (<= 1 pt on val)",
              title_fontsize=7)
    names = list(dict.fromkeys(o.method for s in seeds for o in runs[s]))
    for y, name in enumerate(names):
        vals = [o.matched["test"] for s in seeds for o in runs[s] if o.method == name and o.matched]
        if not vals:
            continue
        mean = sum(vals) / len(vals)
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        bx.errorbar([mean], [y], xerr=[sd], fmt="o", color=colors.get(name, "k"), capsize=3)
        bx.plot(vals, [y] * len(vals), "x", color=colors.get(name, "k"), alpha=0.6, ms=5)
    bx.axvline(sum(b["test"] for b in baselines.values()) / len(baselines) - TOLERANCE, color="grey", ls="--", lw=1)
    bx.set_yticks(range(len(names)), names, fontsize=8)
    bx.invert_yaxis()
    bx.set_xlabel(f"test accuracy at {match:g}x compression (%)")
    bx.set_title(f"matched compression: mean +- sd over {len(seeds)} seed(s), x: seeds", fontsize=8)
    bx.grid(True, axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True
