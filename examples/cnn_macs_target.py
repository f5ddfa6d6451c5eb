"""A CNN pruned to a MACs budget: the report as JSON and Markdown, and a plot of the kept channels.

Run: python examples/cnn_macs_target.py [--plot PNG]
(``--plot docs/img/groups.png`` regenerates the picture in the documentation.)
"""
import argparse
import importlib.util
import json

import torch

import fxprune
from fxprune.testing import zoo

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--plot", default="groups.png", help="where the plot goes (default groups.png)")
plot = parser.parse_args().plot

model, example_inputs = zoo.resnet_basic()

# Half the multiply-accumulates.  The ratio is searched: the least-pruned plan within budget, one
# channel step from it (round_to=8 would keep widths multiples of 8, in bigger steps).
result = fxprune.prune(model, example_inputs, target_macs=0.5)
report = result.report
print(report.notes[0])                                # where the search landed
print(f"MACs {report.macs_before:,} -> {report.macs_after:,}, params {report.params_before:,} -> "
      f"{report.params_after:,}")
assert report.macs_after <= 0.5 * report.macs_before

# The per-layer table: widths, parameters and MACs before and after.
for row in report.layers[:4]:
    print(f"  {row.name:<16} {row.family:<7} width {row.width_before} -> {row.width_after}, "
          f"MACs {row.macs_before:,} -> {row.macs_after:,}")

# Machine-readable and human-readable copies of the report.
with open("report.json", "w") as f:
    f.write(report.to_json(indent=1))
with open("report.md", "w") as f:
    f.write(report.to_markdown())
with open("report.json") as f:
    assert json.load(f)["macs"]["after"] == report.macs_after

# Kept and removed channels per layer (matplotlib is optional).
if importlib.util.find_spec("matplotlib") is not None:
    print("wrote", fxprune.plot_groups(result, plot))

with torch.no_grad():
    print("output shape:", tuple(result.graph_module(*example_inputs).shape))
