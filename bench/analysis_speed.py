"""Analysis and rewrite speed on the zoo and on a 7B-parameter Llama built on the meta device.

Prints one row per model: graph nodes, coupled groups, analysis seconds, rewrite
seconds (L1 scoring + selection + rewrite at ratio 0.5), and the params / MACs
ratios after pruning 50% of every group.  The 7B model lives on the meta device:
analysis never allocates its weights (peak RSS is printed).

Run:  python bench/analysis_speed.py [--skip-7b] [--repeat N]
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

import fxprune
from fxprune.testing import zoo


def measure(name: str, factory, repeat: int) -> tuple:
    model, inputs = factory()
    best_a = best_r = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        analysis = fxprune.analyze(model, inputs)
        t1 = time.perf_counter()
        result = fxprune.prune(model, inputs, ratio=0.5, analysis=analysis)
        t2 = time.perf_counter()
        best_a, best_r = min(best_a, t1 - t0), min(best_r, t2 - t1)
    nodes = len(analysis.graph_module.graph.nodes)
    rep = result.report
    return (name, nodes, len(analysis.groups), best_a, best_r, rep.params_ratio, rep.macs_ratio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-7b", action="store_true", help="skip the 7B meta-device model")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per zoo model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    fxprune.analyze(*zoo.lenet5())  # warm-up: imports, fake-tensor caches
    rows = [measure(name, zoo.ZOO[name], args.repeat) for name in sorted(zoo.ZOO)]
    if not args.skip_7b:
        rows.append(measure("llama_7b_meta", zoo.llama_7b_meta, 1))
    header = f"{'model':<18} {'nodes':>6} {'groups':>6} {'analysis s':>10} {'rewrite s':>9} {'params':>7} {'MACs':>7}"
    print(header)
    print("-" * len(header))
    for name, nodes, groups, ta, tr, pr, mr in rows:
        print(f"{name:<18} {nodes:>6} {groups:>6} {ta:>10.3f} {tr:>9.3f} {pr:>7.1%} {mr:>7.1%}")
    zoo_total = sum(r[3] for r in rows if r[0] != "llama_7b_meta")
    per_node = [r[3] / r[1] * 1e3 for r in rows]
    print(f"\nwhole zoo analysis: {zoo_total:.2f} s; ms per node: "
          f"min {min(per_node):.2f}, max {max(per_node):.2f}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
