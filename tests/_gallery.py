"""Small models that exercise the rules the zoo does not use (for the soundness test)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Functional(nn.Module):
    """Functional forms of parametrised layers, with parameters as get_attr nodes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.w1 = nn.Parameter(torch.randn(6, 3, 3, 3))
        self.b1 = nn.Parameter(torch.randn(6))
        self.rm = nn.Buffer(torch.randn(6))
        self.rv = nn.Buffer(torch.rand(6) + 0.5)
        self.g = nn.Parameter(torch.randn(6))
        self.wt = nn.Parameter(torch.randn(6, 4, 2, 2))
        self.w1d = nn.Parameter(torch.randn(5, 4, 3))
        self.emb = nn.Parameter(torch.randn(10, 4))
        self.lw = nn.Parameter(torch.randn(7, 4))
        self.lnw = nn.Parameter(torch.randn(7))
        self.gnw = nn.Parameter(torch.randn(4))

    def forward(self, x, ids):
        y = F.conv2d(x, self.w1, self.b1, padding=1)
        y = F.batch_norm(y, self.rm, self.rv, self.g, self.b1, False)
        z = F.conv_transpose2d(y, self.wt, stride=2)                     # [B, 4, 2H, 2W]
        z = F.group_norm(z, 2, self.gnw)
        s = F.conv1d(z.flatten(2), self.w1d)                              # [B, 5, L]
        e = F.embedding(ids, self.emb)                                    # [B, T, 4]
        h = F.linear(e, self.lw)                                          # [B, T, 7]
        h = F.layer_norm(h, (7,), self.lnw)
        h = F.rms_norm(h, (7,), self.lnw)
        return s.mean(-1), h


class Modules(nn.Module):
    """Module forms the zoo does not use."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.prelu = nn.PReLU(6)
        self.ln = nn.LayerNorm(6)
        self.rms = nn.RMSNorm(6)
        self.lin = nn.Linear(6, 8)
        self.soft = nn.Softmax(dim=-1)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.inorm = nn.InstanceNorm2d(8, affine=True)
        self.gn = nn.GroupNorm(2, 8)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, ids, x):
        h = self.emb(ids)                                # [B, T, 6]
        h = self.prelu(h.transpose(1, 2)).transpose(1, 2)
        h = self.soft(self.lin(self.rms(self.ln(h))))
        y = self.out(self.gn(self.inorm(self.conv(x))))
        return h, y


class Tensors(nn.Module):
    """Tensor methods and functions: layout, reductions, splits, stacks."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 12)
        self.b = nn.Linear(4, 12)
        self.c = nn.Linear(12, 3)
        self.d = nn.Linear(6, 3)

    def forward(self, x):
        y = self.a(x)                                     # [B, 12]
        z = self.b(x)
        m = torch.stack([y, z], 0).sum(0)                 # stack ties y and z
        p, q = torch.split(m, [5, 7], dim=1)
        r = torch.cat([p, q], 1) + torch.zeros_like(m)
        u = r.unflatten(1, (2, 6))                        # [B, 2, 6]
        v = u.transpose(0, 1).transpose(0, 1)
        w = v.repeat(1, 1, 2)[:, :, :6]                  # [B, 2, 6]
        k = w.max(dim=1)[0] + w.norm(2, 1) + w.softmax(-1).sum(1) + w.log_softmax(-1).sum(1)
        big = self.c(y * y.pow(2) ** 1 + F.relu(y - z) // 1 + (y > z).float())
        a0, a1 = torch.unbind(u, dim=1)
        e = a0.expand_as(a1) * a1 + y.view(-1, 12).t().t()[:, :6]
        return self.d(k + e), big


class Transposes(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(5, 3)

    def forward(self, x):                                 # x [B, 5, 4]
        y = self.a(x)                                     # [B, 5, 6]
        y = y.mT.contiguous()                             # [B, 6, 5]
        z = y[0].t()                                      # [5, 6]
        return self.b(y).sum(1) + z.sum(), y.size(1)


class Implanted(nn.Module):
    """HAP's implanted convolution (fxprune.rewrite.implant), pointwise and low-rank."""

    def __init__(self) -> None:
        super().__init__()
        from fxprune.rewrite.implant import ImplantedConv2d

        torch.manual_seed(2)
        a, b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 6, 3, padding=1)
        self.a = ImplantedConv2d(a, torch.tensor([0, 2, 3, 5, 7]), torch.tensor([1, 4, 6]), "lowrank", 2)
        self.b = ImplantedConv2d(b, torch.tensor([1, 2, 4]), torch.tensor([0, 3, 5]), "pointwise")
        with torch.no_grad():
            self.b.implant_u.normal_()
        self.c = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.c(F.relu(self.b(F.relu(self.a(x)))))


GALLERY = {
    "implanted": (Implanted, lambda: (torch.randn(2, 3, 6, 6),)),
    "functional": (Functional, lambda: (torch.randn(2, 3, 4, 4), torch.randint(0, 10, (2, 5)))),
    "modules": (Modules, lambda: (torch.randint(0, 10, (2, 5)), torch.randn(2, 3, 6, 6))),
    "tensors": (Tensors, lambda: (torch.randn(3, 4),)),
    "transposes": (Transposes, lambda: (torch.randn(2, 5, 4),)),
}
