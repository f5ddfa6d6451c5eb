"""A recipe with fine-tuning, interrupted and resumed from its checkpoint directory.

A small CNN learns a synthetic 4-class task (which quadrant of an 8x8 image is bright); the IAP
recipe (activation scores, 20% of every group per round, stop at 1 point of accuracy loss) prunes
it with a few SGD steps of fine-tuning per round.  Round 2 is interrupted (as Ctrl-C would), and
calling the recipe again with the same ``checkpoint_dir`` resumes after the last finished round.

Run: python examples/recipe_finetune_resume.py [--plot PNG]
(``--plot docs/img/history.png`` regenerates the picture in the documentation.)
"""
import argparse
import importlib.util
import os
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

import fxprune
from fxprune.schedules import ScheduleInterrupted

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--plot", default="history.png", help="where the plot goes (default history.png)")
plot = parser.parse_args().plot
torch.manual_seed(0)
torch.set_num_threads(1)


def make_data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy 1x8x8 images whose label is the bright quadrant."""
    y = torch.randint(0, 4, (n,))
    x = 2.0 * torch.randn(n, 1, 8, 8)
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 1.0
    return x, y


train_x, train_y = make_data(512)
test_x, test_y = make_data(256)
model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, 4))


def train(module: nn.Module, steps: int) -> nn.Module:
    opt = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
    module.train()
    for step in range(steps):
        idx = torch.randint(0, len(train_x), (32,))
        loss = F.cross_entropy(module(train_x[idx]), train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return module.eval()


def evaluate(module: nn.Module) -> float:
    """Accuracy in percent on the held-out images."""
    module.eval()
    with torch.no_grad():
        return 100.0 * (module(test_x).argmax(1) == test_y).float().mean().item()


train(model, 120)
print(f"baseline accuracy: {evaluate(model):.1f}%")

calls = {"finetune": 0, "interrupted": False}


def finetune(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A few SGD steps after each prune; the first run is interrupted in round 2."""
    calls["finetune"] += 1
    if calls["finetune"] == 2 and not calls["interrupted"]:
        calls["interrupted"] = True
        raise KeyboardInterrupt                       # what Ctrl-C does mid-round
    return train(gm, 15)


iap = fxprune.recipe("iap")
calibration = [(train_x[i:i + 64],) for i in range(0, 256, 64)]   # batches for the activation scores
workdir = tempfile.TemporaryDirectory(prefix="fxprune-iap-")   # a fresh directory: a second run starts over
checkpoints = workdir.name
run = dict(evaluate=evaluate, finetune=finetune, data=calibration, checkpoint_dir=checkpoints,
           rounds=8, progress=False)
example_inputs = (train_x[:2],)
try:
    iap.run(model, example_inputs, **run)
except ScheduleInterrupted as exc:
    print("interrupted; finished rounds:", [r.round for r in exc.history.rounds])
    print("on disk:", sorted(f for f in os.listdir(checkpoints) if not f.startswith(".")))

before = calls["finetune"]
history = iap.run(model, example_inputs, **run)       # resumes after round 1: it is not redone
print(f"resumed: {calls['finetune'] - before} fine-tuning calls for rounds 2..{history.rounds[-1].round}")
print(history.summary())
assert [r.round for r in history.rounds][:2] == [0, 1] and not history.interrupted
assert calls["finetune"] - before == history.rounds[-1].round - 1   # rounds 0 and 1 were not redone

best = history.graph_module
print(f"result: round {history.best_round}, accuracy {evaluate(best):.1f}%, "
      f"{history.best.metrics['compression']:.2f}x fewer parameters")
if importlib.util.find_spec("matplotlib") is not None:
    print("wrote", history.plot(plot))
workdir.cleanup()
