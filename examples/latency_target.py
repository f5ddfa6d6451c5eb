"""A CNN pruned to a latency budget measured on this machine.

The first call measures a per-layer latency table (each layer timed on its actual inputs, for the
original model and three pruned ones) and caches it under ``$FXPRUNE_CACHE`` or
``~/.cache/fxprune``; the ratio is then searched through the table, and the pruned model is
measured once to compare the prediction with reality.

Run: python examples/latency_target.py
"""
import torch

import fxprune
from fxprune.testing import zoo

torch.manual_seed(0)
model = zoo.ResNet(zoo.BasicBlock, (2, 2, 2, 2), widths=(16, 32, 64, 128)).eval()
example_inputs = (torch.randn(1, 3, 64, 64),)

# 60% of the original latency, on one thread (LatencyConfig(threads=...) for more).
result = fxprune.prune(model, example_inputs, target_latency=0.6, round_to=8)
for note in result.report.notes:
    print(note)            # where the search landed; predicted vs measured latency

print("slowest layers (ms, measured before -> predicted after):")
for row in result.report.latency[:5]:
    print(f"  {row.name:<22} {row.op:<10} {row.before * 1e3:.3f} -> {row.after * 1e3:.3f}")

# The table is cached: measuring it again reads the cache.
table = fxprune.latency_table(result.analysis)
print(f"table: {len(table.nodes)} nodes on {table.device}, {table.threads} thread, ratios {table.ratios}, "
      f"original {table.original_seconds * 1e3:.3f} ms")
