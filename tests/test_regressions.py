"""Regression tests: shrunk counterexamples the property tests found (one per bug).

Each source is the hypothesis output verbatim; each test failed before its fix.
"""
from __future__ import annotations

import pytest

from fxprune.testing import check_pruning

CASES = {}

# reshape(B, T, C) read C from a tensor of another (pruned) group: dynamic sizes that change are now pinned.
CASES['size_read_from_another_tensor'] = '''\
import torch
import torch.nn as nn
import torch.nn.functional as F


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc0 = nn.Linear(23, 12)
        self.fc1 = nn.Linear(12, 19, bias=False)
        self.fc2 = nn.Linear(19, 10)
        self.q0 = nn.Linear(10, 10)
        self.k0 = nn.Linear(10, 10)
        self.v0 = nn.Linear(10, 10)
        self.proj0 = nn.Linear(10, 10)
        self.proj1 = nn.Linear(12, 10)
        self.proj2 = nn.Linear(12, 10)

    def forward(self, x):
        x = self.fc0(x)
        # residual block
        # residual block
        out1 = self.fc1(x)
        out1 = self.fc2(out1)
        # multi-head self-attention (5 heads)
        B, T, C = out1.shape
        q = self.q0(out1).view(B, T, 5, 2).transpose(1, 2)
        k = self.k0(out1).view(B, T, 5, 2).transpose(1, 2)
        v = self.v0(out1).view(B, T, 5, 2).transpose(1, 2)
        attn = (q @ k.transpose(-2, -1)) * 0.7071067811865476
        attn = attn.softmax(dim=-1)
        context = (attn @ v).transpose(1, 2).reshape(B, T, C)
        out1 = self.proj0(context)
        identity = self.proj1(x)
        out = torch.add(out1, identity)
        # split block (2 parts, merged by cat)
        part, part1 = out.split(5, dim=-1)
        out = torch.cat([part, part1], dim=-1)
        identity1 = self.proj2(x)
        x = torch.add(out, identity1)
        return x


torch.manual_seed(4317295)
model = Model()
model.eval()
example_inputs = (torch.randn(2, 14, 23),)
'''

# GroupNorm statistics over a labelled spatial dim were not flagged as channel-mixing.
CASES['groupnorm_over_token_dim'] = '''\
import torch
import torch.nn as nn
import torch.nn.functional as F


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn0 = nn.BatchNorm1d(23)
        self.bn1 = nn.BatchNorm1d(23)
        self.fc0 = nn.Linear(23, 1)
        self.act0 = nn.ReLU()
        self.act1 = nn.ReLU()
        self.token_fc0 = nn.Linear(14, 14)
        self.gn0 = nn.GroupNorm(1, 1)
        self.act2 = nn.GELU()
        self.token_fc1 = nn.Linear(14, 14)
        self.fc1 = nn.Linear(1, 18, bias=False)
        self.ln0 = nn.LayerNorm(9)
        self.fc2 = nn.Linear(9, 22)
        self.proj0 = nn.Linear(1, 31)
        self.ln1 = nn.LayerNorm(31)

    def forward(self, x):
        # residual block
        # residual block
        out1 = self.bn0(x.transpose(1, 2)).transpose(1, 2)
        out = out1 + x
        out = self.bn1(out.transpose(1, 2)).transpose(1, 2)
        x = out + x
        x = self.fc0(x)
        x = self.act0(x)
        # residual block
        out2 = self.act1(x)
        # residual block
        out3 = self.token_fc0(out2.transpose(1, 2)).transpose(1, 2)
        out3 = self.gn0(out3.transpose(1, 2)).transpose(1, 2)
        out3 = self.act2(out3)
        out3 = self.token_fc1(out3.transpose(1, 2)).transpose(1, 2)
        out2 = torch.add(out3, out2)
        out2 = self.fc1(out2)
        # split block (2 parts, merged by cat)
        part, part1 = out2.split(9, dim=-1)
        branch = self.ln0(part1)
        branch = self.fc2(branch)
        out2 = torch.cat([part, branch], dim=-1)
        identity = self.proj0(x)
        x = out2 + identity
        x = self.ln1(x)
        return x


def randomize_norm_layers(model):
    """Give norm layers non-trivial affine parameters and running statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


torch.manual_seed(2228554)
model = Model()
randomize_norm_layers(model)
model.eval()
example_inputs = (torch.randn(2, 14, 23),)
'''

# a conv over a labelled (token-linear) spatial dim did not fix it, so pruning changed the length.
CASES['conv_over_pruned_positions'] = '''\
import torch
import torch.nn as nn
import torch.nn.functional as F


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn0 = nn.BatchNorm1d(23)
        self.bn1 = nn.BatchNorm1d(23)
        self.fc0 = nn.Linear(23, 1)
        self.act0 = nn.ReLU()
        self.act1 = nn.ReLU()
        self.token_fc0 = nn.Linear(14, 14)
        self.tconv0 = nn.Conv1d(1, 2, kernel_size=3, padding=1)
        self.act2 = nn.ReLU()
        self.proj0 = nn.Linear(1, 2)
        self.act3 = nn.ReLU()
        self.act4 = nn.ReLU()

    def forward(self, x):
        # residual block
        # residual block
        out1 = self.bn0(x.transpose(1, 2)).transpose(1, 2)
        out = out1 + x
        out = self.bn1(out.transpose(1, 2)).transpose(1, 2)
        x = out + x
        x = self.fc0(x)
        x = self.act0(x)
        # residual block
        out2 = self.act1(x)
        out2 = self.token_fc0(out2.transpose(1, 2)).transpose(1, 2)
        out2 = self.tconv0(out2.transpose(1, 2)).transpose(1, 2)
        out2 = self.act2(out2)
        identity = self.proj0(x)
        x = out2 + identity
        x = x.mean(dim=1)
        x = self.act3(x)
        x = self.act4(x)
        return x


def randomize_norm_layers(model):
    """Give norm layers non-trivial affine parameters and running statistics."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


torch.manual_seed(0)
model = Model()
randomize_norm_layers(model)
model.eval()
example_inputs = (torch.randn(2, 14, 23),)
'''

# chunk(2) of a 2-channel conv pruned to 1 channel gives ONE section: the rewrite kept `chunk`
# (its sizes [1, 0] looked like chunk's) and `getitem(chunk, 1)` failed. Found by the 2026-12-01 soak.
CASES['chunk_of_a_pruned_section_gives_fewer_sections'] = '''\
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(8, 2, 3, padding=1)
        self.fc = nn.Linear(10, 8)

    def forward(self, x):
        x = self.conv(x)
        part, part1 = x.chunk(2, dim=1)
        x = torch.relu(torch.cat([part, part1], dim=1))
        return self.fc(torch.flatten(x, 1))


torch.manual_seed(0)
model = Model()
model.eval()
example_inputs = (torch.randn(2, 8, 5),)
'''



@pytest.mark.parametrize("name", sorted(CASES))
def test_regression(name):
    namespace: dict = {}
    exec(compile(CASES[name], f"<regression {name}>", "exec"), namespace)
    check_pruning(namespace["model"], namespace["example_inputs"], plans=6, seed=0)
