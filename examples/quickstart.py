"""Quickstart: analyse, prune and verify a bundled ResNet.

Run: python examples/quickstart.py
"""
import torch

import fxprune
from fxprune.testing import check_pruning, zoo

model, example_inputs = zoo.resnet_basic()

# 1. Inspect the coupled channel groups before deciding anything.
analysis = fxprune.analyze(model, example_inputs)
print(f"{len(analysis.groups)} coupled groups, {len(analysis.barriers)} barriers")
print(analysis.groups[0].describe())

# 2. Prune half of every group's channels by L1 magnitude.
result = fxprune.prune(model, example_inputs, ratio=0.5, analysis=analysis)
print(result.report)

# 3. The result is a new, smaller GraphModule; the model is untouched.
with torch.no_grad():
    print("output shape:", tuple(result.graph_module(*example_inputs).shape))
print(result.graph_module.get_submodule("layer1.0.conv1"))

# 4. Hold it to the invariants (identity, dead channels, shapes, re-trace).
print(check_pruning(model, example_inputs))
