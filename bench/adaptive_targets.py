"""``adaptive(target="macs", target_value=0.5)`` with default settings on every zoo model.

Prints, per model, the MACs reduction reached, its gap to 50%, the largest
single-channel step of the result (the gap must not exceed it: the result is
within one channel step of the target), the result round and the wall time.

Run:  python bench/adaptive_targets.py [--target-value 0.5] [--kind macs|params] [models ...]
"""
from __future__ import annotations

import argparse
import time

import torch

from fxprune.schedules import adaptive
from fxprune.scoring.targets import TargetKind
from fxprune.testing import zoo
from fxprune.testing.targets import largest_channel_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="zoo names (default: the whole zoo but llama_7b_meta)")
    parser.add_argument("--target-value", type=float, default=0.5)
    parser.add_argument("--kind", choices=["macs", "params"], default="macs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.models or [n for n in sorted(zoo.ZOO) if n != "llama_7b_meta"]
    kind = TargetKind(args.kind)
    print(f"{'model':<18} {'reduction':>9} {'gap':>7} {'1 channel':>9} {'within':>6} {'best':>4} {'wall s':>6}")
    for name in names:
        model, x = zoo.ZOO[name]()
        t0 = time.perf_counter()
        history = adaptive(model, x, target=args.kind, target_value=args.target_value, progress=False)
        wall = time.perf_counter() - t0
        base, best = history.rounds[0].metrics[args.kind], history.best.metrics[args.kind]
        gap = args.target_value - (1 - best / base)
        step = largest_channel_step(history.graph_module, x, kind) / base
        print(f"{name:<18} {1 - best / base:>9.2%} {gap:>7.2%} {step:>9.2%} {str(0 <= gap <= step):>6} "
              f"{history.best.round:>4} {wall:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
