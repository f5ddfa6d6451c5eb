"""Prune a torchvision-style ResNet and get it back as a ResNet (not a GraphModule).

Run: python examples/materialize_cnn.py
"""
import os
import tempfile

import torch

import fxprune
from fxprune.testing import zoo

model, example_inputs = zoo.resnet_basic()          # torchvision layout: conv1, bn1, layer1..layer4, fc

# Blocks of one stage keep identical widths (uniform=True), as a torchvision config would have them.
result = fxprune.prune(model, example_inputs, ratio=0.5, uniform=True)
small = result.materialize()                         # checked against result.graph_module before it returns

print(type(small).__name__, "with", sum(p.numel() for p in small.parameters()), "parameters, was",
      sum(p.numel() for p in model.parameters()))
print(small.layer4[0])                               # Sequential indexing and the block classes are back
print("layer1 widths:", [blk.conv1.out_channels for blk in small.layer1])

with torch.no_grad():
    same = torch.allclose(small(*example_inputs), result.graph_module(*example_inputs), atol=1e-5)
print("same outputs as the pruned GraphModule:", same)

# An ordinary module: save and load it like any other.
path = os.path.join(tempfile.mkdtemp(), "resnet_pruned.pt")
torch.save(small, path)
again = torch.load(path, weights_only=False)
print("reloaded:", type(again).__name__, again.fc.in_features, "features into fc")
assert same and isinstance(again, zoo.ResNet)
