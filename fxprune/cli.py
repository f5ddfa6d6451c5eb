"""The ``fxprune`` command line.

Models are named as ``package.module:callable``.  The callable returns either
``(model, example_inputs)`` (like the factories of :mod:`fxprune.testing.zoo`)
or a model, in which case ``--input-shape`` gives the example input's shape.
Bundled models can be named by their zoo name alone (``resnet_basic``).

Examples::

    fxprune zoo
    fxprune analyze resnet_basic
    fxprune prune resnet_basic --ratio 0.5 --out pruned.fxp --export-out pruned.pt2
    fxprune prune mypkg.models:build --input-shape 1,3,224,224 --scorer l2 --global
    fxprune prune resnet_basic --target-macs 0.5 --report json
    fxprune prune resnet_basic --target-latency 0.6 --progress
    fxprune prune lenet5 --scorer activation --calib batches.pt --plot groups.png
"""
from __future__ import annotations

import argparse
from pathlib import Path
import importlib
import sys
from typing import Sequence

import torch

__all__ = ["main", "load_calibration", "load_model", "parse_example_kwargs"]


def load_model(spec: str, input_shape: str | None = None, *,
               keyword_inputs: bool = False) -> tuple[torch.nn.Module, tuple | dict]:
    """Resolve ``spec`` (``module:callable`` or a zoo name) into ``(model, example_inputs)``.

    ``example_inputs`` is a tuple, or the dict of keyword inputs a factory returned.
    With ``keyword_inputs`` (given on the command line) a bare model needs no
    ``--input-shape``.
    """
    from .errors import ConfigError
    from .testing import zoo

    if ":" not in spec:
        if spec in zoo.ZOO:
            return zoo.ZOO[spec]()
        raise ConfigError(f"unknown model {spec!r}: use 'package.module:callable' or one of "
                          f"the zoo models {sorted(zoo.ZOO)}")
    mod_name, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load {spec!r}: {exc}") from exc
    made = obj() if callable(obj) and not isinstance(obj, torch.nn.Module) else obj
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        model, inputs = made
        if isinstance(inputs, dict):
            return model, dict(inputs)
        return model, tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    if isinstance(made, torch.nn.Module):
        if not input_shape and keyword_inputs:
            return made, ()
        if not input_shape:
            raise ConfigError(f"{spec!r} returned a model without example inputs: pass "
                              "--input-shape, e.g. --input-shape 1,3,224,224, or --example-kwargs")
        try:
            shape = tuple(int(s) for s in input_shape.split(","))
        except ValueError:
            raise ConfigError(f"--input-shape {input_shape!r}: give comma-separated integers, "
                              "e.g. --input-shape 1,3,224,224") from None
        return made, (torch.randn(shape),)
    raise ConfigError(f"{spec!r} must return a model or (model, example_inputs)")


_DTYPES = {"float": torch.float32, "long": torch.long, "int": torch.int32, "bool": torch.bool}


def parse_example_kwargs(items: Sequence[str] | None) -> dict[str, torch.Tensor]:
    """``--example-kwargs`` items (``name=1,8:long``) as keyword example inputs.

    Example:
        >>> {k: (tuple(v.shape), v.dtype) for k, v in parse_example_kwargs(["input_ids=1,8:long"]).items()}
        {'input_ids': ((1, 8), torch.int64)}
    """
    from .errors import ConfigError

    out: dict[str, torch.Tensor] = {}
    for item in items or ():
        name, eq, rest = item.partition("=")
        shape, _, dtype = rest.partition(":")
        try:
            dims = tuple(int(s) for s in shape.split(","))
        except ValueError:
            dims = ()
        if not eq or not name.isidentifier() or not dims or (dtype or "float") not in _DTYPES:
            raise ConfigError(f"--example-kwargs {item!r}: give NAME=SHAPE[:DTYPE], e.g. input_ids=1,8:long "
                              f"(dtypes: {sorted(_DTYPES)})")
        kind = _DTYPES[dtype or "float"]
        out[name] = torch.randn(dims) if kind.is_floating_point else torch.ones(dims, dtype=kind)
    return out


def _inputs(args: argparse.Namespace) -> tuple[torch.nn.Module, tuple, dict]:
    """The model, its positional and its keyword example inputs, from the command line.

    A factory may return ``(model, {name: tensor})``: keyword inputs, to which
    ``--example-kwargs`` adds.
    """
    kwargs = parse_example_kwargs(args.example_kwargs)
    model, inputs = load_model(args.model, args.input_shape, keyword_inputs=bool(kwargs))
    if isinstance(inputs, dict):
        return model, (), {**inputs, **kwargs}
    return model, inputs, kwargs


def _cmd_zoo(args: argparse.Namespace) -> int:
    from .testing import zoo

    for name in sorted(zoo.ZOO):
        print(name)
    return 0


def _analysis_options(args: argparse.Namespace) -> dict:
    """The analysis options given on the command line (see :class:`fxprune.AnalysisConfig`)."""
    return {"strict": args.strict, "split_policy": args.split_policy, "frontend": args.frontend,
            "ignore": tuple(getattr(args, "ignore", None) or ())}


def _cmd_analyze(args: argparse.Namespace) -> int:
    from .analysis.analysis import analyze

    model, inputs, kwargs = _inputs(args)
    analysis = analyze(model, inputs, example_kwargs=kwargs, **_analysis_options(args))
    if args.format == "json":
        print(analysis.to_json())
    elif args.format == "dot":
        print(analysis.to_dot())
    else:
        print(analysis.summary())
    return 0


_LOSSES = {"cross_entropy": "cross_entropy", "mse": "mse_loss"}


def load_calibration(path: str) -> list:
    """Calibration batches from a file saved with ``torch.save`` (loaded without executing code).

    The file holds a tensor (one batch of the model's only input), a list of
    tensors (batches), or a dict ``{"inputs": [...], "targets": [...]}`` of
    equally long lists (batches with targets, for the ``taylor`` and ``hessian``
    scorers).
    """
    from .errors import ConfigError

    try:
        obj = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise ConfigError(f"--calib: no file {path!r}") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ConfigError(f"--calib {path!r} is not a tensor file torch.load(weights_only=True) can read: "
                          f"{type(exc).__name__}: {exc}") from exc
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict) and set(obj) == {"inputs", "targets"}:
        inputs, targets = list(obj["inputs"]), list(obj["targets"])
        if len(inputs) != len(targets):
            raise ConfigError(f"--calib {path!r}: {len(inputs)} input batches but {len(targets)} target batches")
        return [(x, y) for x, y in zip(inputs, targets)]
    if isinstance(obj, (list, tuple)) and obj and all(isinstance(t, torch.Tensor) for t in obj):
        return list(obj)
    raise ConfigError(f"--calib {path!r} must hold a tensor, a list of tensors, or "
                      '{"inputs": [...], "targets": [...]}')


def _cmd_prune(args: argparse.Namespace) -> int:
    from .api import prune
    from .errors import ConfigError

    for flag, out in (("--out", args.out), ("--export-out", args.export_out)):
        if out and not Path(out).resolve().parent.is_dir():
            raise ConfigError(f"{flag} {out!r}: the directory {str(Path(out).resolve().parent)!r} does not exist")
    model, inputs, kwargs = _inputs(args)
    data = load_calibration(args.calib) if args.calib else None
    loss_fn = getattr(torch.nn.functional, _LOSSES[args.loss]) if args.loss else None
    result = prune(model, inputs, ratio=args.ratio, scorer=args.scorer, global_ranking=args.global_ranking,
                   round_to=args.round_to, uniform=args.uniform, target_macs=args.target_macs, target_params=args.target_params,
                   target_latency=args.target_latency, data=data, loss_fn=loss_fn, progress=args.progress,
                   example_kwargs=kwargs, **_analysis_options(args))
    gm = result.graph_module
    report = result.report
    print({"text": str, "json": lambda r: r.to_json(indent=1), "md": lambda r: r.to_markdown()}[args.report](report))
    if args.plot:
        from .plot import plot_groups

        print(f"wrote {plot_groups(result, args.plot)}", file=sys.stderr)
    if args.out:
        from .serialize import save

        save(result, args.out)
        print(f"saved the pruned result to {args.out} (reload it with fxprune.load(path, model))", file=sys.stderr)
    if args.export_out:
        from .serialize.files import atomic_write

        program = torch.export.export(gm, result.analysis.example_inputs)
        atomic_write(args.export_out, lambda fh: torch.export.save(program, fh))
        print(f"saved the pruned program to {args.export_out} (torch.export.load(path).module())", file=sys.stderr)
    if args.code:
        print(gm.code, file=sys.stderr if args.report == "json" else sys.stdout)
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from .recipes import available_recipes, recipe

    if args.name:
        print(recipe(args.name).to_toml())
        return 0
    for name in available_recipes():
        print(f"{name:<8} {recipe(name).description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .analysis.analysis import FRONTENDS, SPLIT_POLICIES, AnalysisConfig

    p = argparse.ArgumentParser(prog="fxprune", description="Structured pruning compiler for PyTorch (torch.fx).")
    sub = p.add_subparsers(dest="command", required=True)

    def model_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("model", help="zoo name or 'package.module:callable'")
        sp.add_argument("--input-shape", help="example input shape, e.g. 1,3,224,224")
        sp.add_argument("--strict", action="store_true", help="fail on ops without a rule")
        sp.add_argument("--split-policy", choices=list(SPLIT_POLICIES), default=AnalysisConfig().split_policy,
                        help="which factor of a channel dim split into several (attention heads) is pruned: "
                             "auto: whole heads where the split reaches an attention op, inner elsewhere "
                             "(a channel shuffle); heads: whole heads, of (heads, head_dim) and of fused "
                             "(3, heads, head_dim) q/k/v layouts, and whole GQA groups; "
                             "inner: head_dim (channels per group) in every head; "
                             "outer: the outermost factor (on a fused q/k/v layout that is q, k or v, which "
                             "attention fixes: nothing there is pruned, and the report says so) "
                             "(default: %(default)s)")
        sp.add_argument("--frontend", choices=list(FRONTENDS), default=AnalysisConfig().frontend,
                        help="capture with torch.fx.symbolic_trace (fx), torch.export (export, ATen level, "
                             "dynamic batch/sequence dims), or auto: fx, and export where fx cannot trace "
                             "or leaves channel barriers export does not (default: %(default)s)")
        sp.add_argument("--example-kwargs", nargs="+", metavar="NAME=SHAPE[:DTYPE]",
                        help="keyword example inputs (Hugging Face models), e.g. input_ids=1,8:long "
                             "attention_mask=1,8:long; integer inputs are ones, float inputs random "
                             "(dtype: float, long, int, bool; default float)")

    sp = sub.add_parser("zoo", help="list the bundled example architectures")
    sp.set_defaults(fn=_cmd_zoo)

    sp = sub.add_parser("analyze", help="list the coupled channel groups of a model")
    model_args(sp)
    sp.add_argument("--format", choices=["text", "json", "dot"], default="text")
    sp.set_defaults(fn=_cmd_analyze)

    sp = sub.add_parser("prune", help="prune a model and print the report")
    model_args(sp)
    sp.add_argument("--ratio", type=float, default=0.5, help="fraction of channels to remove (default 0.5)")
    sp.add_argument("--scorer", default="l1", help="scorer name (default l1)")
    sp.add_argument("--global", dest="global_ranking", action="store_true", help="rank channels globally")
    sp.add_argument("--round-to", type=int, default=1, help="keep channel counts multiples of N")
    sp.add_argument("--uniform", action="store_true",
                    help="repeated blocks keep identical widths (needed to materialize them as the original classes)")
    sp.add_argument("--ignore", nargs="*", help="module names whose output channels are kept")
    sp.add_argument("--target-macs", type=float, metavar="F",
                    help="a MACs budget instead of --ratio: a fraction <= 1 of the original, or a count")
    sp.add_argument("--target-params", type=float, metavar="F",
                    help="a parameter budget instead of --ratio (fraction or count)")
    sp.add_argument("--target-latency", type=float, metavar="F",
                    help="a latency budget instead of --ratio: a fraction in (0, 1] of the original model's "
                         "latency, measured on this machine (one thread; the table is cached under "
                         "$FXPRUNE_CACHE or ~/.cache/fxprune)")
    sp.add_argument("--progress", action="store_true",
                    help="show progress on stderr (calibration, latency measurement, target search)")
    sp.add_argument("--calib", metavar="FILE",
                    help="calibration data for the activation, taylor and hessian scorers: a torch.save file of "
                         "a tensor, a list of tensors, or {'inputs': [...], 'targets': [...]}")
    sp.add_argument("--loss", choices=sorted(_LOSSES), help="loss of the taylor and hessian scorers")
    sp.add_argument("--report", choices=["text", "json", "md"], default="text",
                    help="how the report is printed (json: only the report on stdout)")
    sp.add_argument("--plot", metavar="PNG", help="write kept/removed channels per layer (needs matplotlib)")
    sp.add_argument("--out", metavar="FILE",
                    help="save the pruned result here (fxprune.save: JSON and tensors; fxprune.load reloads it)")
    sp.add_argument("--export-out", metavar="PT2",
                    help="save the pruned program for deployment (torch.export.save; torch.export.load reloads it)")
    sp.add_argument("--code", action="store_true", help="print the emitted forward code")
    sp.set_defaults(fn=_cmd_prune)

    sp = sub.add_parser("recipes", help="list the shipped recipes, or print one",
                        description="Recipes run schedules that need your fine-tune and evaluate "
                                    "callbacks: run them from Python with fxprune.recipe(NAME).run(...).")
    sp.add_argument("name", nargs="?", help="a recipe name or path to print as TOML")
    sp.set_defaults(fn=_cmd_recipes)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fxprune`` command."""
    from .errors import FxPruneError

    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except FxPruneError as exc:
        print(f"fxprune: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
