"""Latency targets: predicted versus measured latency at a few targets, for four zoo architectures.

For each model (zoo classes at sizes where compute, not Python overhead, dominates), a latency
table is measured (fresh, not from the cache), then ``prune(target_latency=t)`` runs for each
target, with and without ``round_to=8``; the pruned model is measured again (median of 15 samples
of at least 50 ms) and compared with the table's prediction.  The Llama runs twice: pruning whole
heads (``split_policy="outer"``, as the default ``auto`` does) and pruning ``head_dim``
(``inner``, where the value head_dim can differ from the query/key one).  Single thread unless ``--threads``.

Run:  python bench/latency.py [--targets 0.8 0.6 0.4] [--threads 1]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch

import fxprune
from fxprune.analysis.latency import time_model
from fxprune.latency import LatencyConfig, latency_table
from fxprune.testing import zoo


def models() -> list[tuple[str, torch.nn.Module, tuple, dict]]:
    torch.manual_seed(0)
    rows = [
        ("resnet_basic w32-256 1x3x64x64",
         zoo.ResNet(zoo.BasicBlock, (2, 2, 2, 2), widths=(32, 64, 128, 256)), (torch.randn(1, 3, 64, 64),)),
        ("mobilenet_v2 2x3x128x128", zoo.MobileNetV2(), (torch.randn(2, 3, 128, 128),)),
        ("vit d192 depth4 4x3x64x64", zoo.VisionTransformer(img_size=64, embed_dim=192, depth=4, num_heads=6),
         (torch.randn(4, 3, 64, 64),)),
    ]
    llama = zoo.Llama(vocab_size=512, dim=256, n_layers=4, n_heads=8, n_kv_heads=4, intermediate_size=768,
                      max_seq_len=128)
    tokens = (torch.randint(0, 512, (4, 64)),)
    return [(name, model, x, {}) for name, model, x in rows] + [
        ("llama d256 4 layers, whole heads", llama, tokens, {"split_policy": "outer"}),
        ("llama d256 4 layers, head_dim", llama, tokens, {"split_policy": "inner"}),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.8, 0.6, 0.4])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = LatencyConfig(threads=args.threads, cache_dir=tempfile.mkdtemp(prefix="fxprune-bench-"))
    check = LatencyConfig(threads=args.threads, repeat=15, model_min_time=0.05, cache=False)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} thread(s), grid {cfg.ratios}")
    header = (f"{'target':>6} {'round_to':>8} {'ratio':>6} {'predicted':>10} {'measured':>10} {'error':>7} "
              f"{'pred. frac':>10} {'meas. frac':>10}")
    errors, fractions = [], []
    for name, model, x, options in models():
        model.eval()
        analysis = fxprune.analyze(model, x, **options)
        t0 = time.perf_counter()
        table = latency_table(analysis, cfg)
        took = time.perf_counter() - t0
        print(f"\n{name}: {len(table.nodes)} nodes, table measured in {took:.1f} s, original "
              f"{table.original_seconds * 1e3:.3f} ms")
        print(header)
        for target in args.targets:
            for round_to in (1, 8):
                result = fxprune.prune(model, x, target_latency=target, round_to=round_to, analysis=analysis,
                                       latency=table)
                predicted = table.predict(analysis, result.plan)
                # the original is measured right before and after the pruned model: the fraction
                # survives slow drifts of the machine's load
                before = time_model(model, x, check)
                measured = time_model(result.graph_module, x, check)
                original = (before + time_model(model, x, check)) / 2
                error = predicted / measured - 1
                pred_frac, meas_frac = predicted / table.predict(analysis, {}), measured / original
                errors.append(abs(error))
                fractions.append(abs(pred_frac - meas_frac))
                hit = result.target
                print(f"{target:>6.2f} {round_to:>8} {hit.ratio:>6.3f} {predicted * 1e3:>8.3f}ms "
                      f"{measured * 1e3:>8.3f}ms {error:>+7.1%} {pred_frac:>10.1%} {meas_frac:>10.1%}"
                      + ("" if hit.reached else "  (not reachable)"))
    errors.sort()
    fractions.sort()
    print(f"\n|error| of the predicted latency over {len(errors)} runs: median {errors[len(errors) // 2]:.1%}, "
          f"max {errors[-1]:.1%}")
    print(f"|predicted - measured| fraction of the original: median {fractions[len(fractions) // 2]:.1%} points, "
          f"max {fractions[-1]:.1%} points")


if __name__ == "__main__":
    main()
