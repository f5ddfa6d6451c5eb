"""Analysis and rewrite speed on the zoo, and Llamas of 7B and 70B shape built on the meta device.

Zoo table, one row per model: graph nodes, coupled groups, the *floor* (plain
``torch.fx.symbolic_trace`` plus one ``ShapeProp`` pass on meta tensors, which any
fx-based pruner pays), fxprune's analysis seconds and their ratio, rewrite seconds
(L1 scoring + selection + rewrite + verification at ratio 0.5), and the params /
MACs left.  Large table: Llamas on the meta device (no weight memory), each run in
its own process so that its peak RSS is its own: 7B shape, 70B shape, and 70B-wide
models of 1 to 116 layers (per-node cost from a few hundred to 10,000 nodes).

Run:  python bench/analysis_speed.py [--skip-large] [--repeat N]
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time

import torch
from torch.fx.passes.shape_prop import ShapeProp

import fxprune
from fxprune.testing import zoo

#: Llama-2-70B's shape (GQA with 8 key/value heads); ``n_layers`` varies in the scaling rows
LLAMA_70B = dict(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, intermediate_size=28672)
LARGE = {
    "llama_7b_meta": {},
    "llama_70b_meta": LLAMA_70B,
    **{f"llama_70b_x{n}": {**LLAMA_70B, "n_layers": n} for n in (1, 10, 40, 116)},
}


def floor_seconds(model: torch.nn.Module, inputs: tuple) -> float | None:
    """``symbolic_trace`` plus one meta-tensor ``ShapeProp`` pass (``None`` if plain fx cannot trace)."""
    meta = copy.deepcopy(model).to("meta")
    meta_inputs = [x.to("meta") if isinstance(x, torch.Tensor) else x for x in inputs]
    try:
        t0 = time.perf_counter()
        gm = torch.fx.symbolic_trace(meta)
        ShapeProp(gm).propagate(*meta_inputs)
        return time.perf_counter() - t0
    except Exception:  # noqa: BLE001 - plain fx cannot trace it: no floor
        return None


def measure(factory, repeat: int) -> dict:
    """Best-of-``repeat`` seconds of floor, analysis and rewrite for one model."""
    model, inputs = factory()
    best = {"floor": float("inf"), "analysis": float("inf"), "rewrite": float("inf")}
    for _ in range(repeat):
        f = floor_seconds(model, inputs)
        best["floor"] = min(best["floor"], f) if f is not None else None
        t0 = time.perf_counter()
        analysis = fxprune.analyze(model, inputs)
        t1 = time.perf_counter()
        result = fxprune.prune(model, inputs, ratio=0.5, analysis=analysis)
        t2 = time.perf_counter()
        best["analysis"], best["rewrite"] = min(best["analysis"], t1 - t0), min(best["rewrite"], t2 - t1)
    return {**best, "nodes": len(analysis.graph_module.graph.nodes), "groups": len(analysis.groups),
            "params": result.report.params_ratio, "macs": result.report.macs_ratio}


def measure_large(name: str) -> dict:
    """One meta-device Llama, analysed and pruned once, with this process's peak RSS."""
    model, inputs = zoo.llama_7b_meta(**LARGE[name])
    t0 = time.perf_counter()
    analysis = fxprune.analyze(model, inputs)
    t1 = time.perf_counter()
    result = fxprune.prune(model, inputs, ratio=0.5, analysis=analysis)
    t2 = time.perf_counter()
    return {"nodes": len(analysis.graph_module.graph.nodes), "groups": len(analysis.groups),
            "analysis": t1 - t0, "rewrite": t2 - t1, "params": result.report.params_ratio,
            "macs": result.report.macs_ratio,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-large", action="store_true", help="skip the meta-device Llamas")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per zoo model")
    parser.add_argument("--one", choices=sorted(LARGE), help=argparse.SUPPRESS)  # a child process's job
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.one:
        print(json.dumps(measure_large(args.one)))
        return
    fxprune.analyze(*zoo.lenet5())  # warm-up: imports, caches
    header = (f"{'model':<18} {'nodes':>6} {'groups':>6} {'floor s':>8} {'analysis s':>10} {'/floor':>6} "
              f"{'rewrite s':>9} {'params':>7} {'MACs':>7}")
    print(header)
    print("-" * len(header))
    total = 0.0
    for name in sorted(zoo.ZOO):
        r = measure(zoo.ZOO[name], args.repeat)
        total += r["analysis"]
        floor, ratio = ((f"{r['floor']:.3f}", f"{r['analysis'] / r['floor']:.2f}") if r["floor"] else ("n/a", ""))
        print(f"{name:<18} {r['nodes']:>6} {r['groups']:>6} {floor:>8} {r['analysis']:>10.3f} {ratio:>6} "
              f"{r['rewrite']:>9.3f} {r['params']:>7.1%} {r['macs']:>7.1%}")
    print(f"\nwhole zoo analysis: {total:.2f} s")
    if args.skip_large:
        return
    header = (f"\n{'model':<18} {'nodes':>6} {'groups':>6} {'analysis s':>10} {'rewrite s':>9} "
              f"{'ms/node':>7} {'peak RSS MiB':>12} {'params':>7} {'MACs':>7}")
    print(header)
    print("-" * (len(header) - 1))
    for name in LARGE:
        out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        ms = (r["analysis"] + r["rewrite"]) / r["nodes"] * 1e3
        print(f"{name:<18} {r['nodes']:>6} {r['groups']:>6} {r['analysis']:>10.2f} {r['rewrite']:>9.2f} "
              f"{ms:>7.2f} {r['rss_mib']:>12.0f} {r['params']:>7.1%} {r['macs']:>7.1%}")


if __name__ == "__main__":
    main()
