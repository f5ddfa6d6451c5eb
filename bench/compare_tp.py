"""Side by side with Torch-Pruning: speed, correctness, params / MACs and latency of the same 0.5 pruning.

For every model of the fxprune zoo (:data:`fxprune.testing.zoo.ZOO`, images at
64x64 where the model accepts them, else its own inputs) and of the tiny
Hugging Face suite (:data:`fxprune.testing.hf_zoo.SUITE`, its own inputs: 1x8
tokens, 1x3x32x32 images; no download), in one
process with ``torch.set_num_threads(1)``, both tools prune half of every
channel group with an L1 magnitude score:

* fxprune: ``fxprune.analyze(model, inputs)`` and ``fxprune.prune(model, inputs,
  ratio=0.5)`` (front end ``fx`` for the zoo, ``auto`` for the HF suite, as in
  ``bench/real_models.py``);
* Torch-Pruning (``torch-pruning==1.6.1``, the ``bench`` extra):
  ``tp.DependencyGraph().build_dependency(model, example_inputs=...)`` and
  ``tp.pruner.MetaPruner(copy, inputs, tp.importance.MagnitudeImportance(p=1),
  pruning_ratio=0.5, ignored_layers=[output layer]).step()``.  With
  ``--tp-config plain`` (the default) that is all: no ``num_heads``, so
  attention layers are pruned like any linear layer.  ``--tp-config heads``
  gives TP the heads of separate q/k/v layers (``num_heads``,
  ``prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=0.5``, TP's
  transformer recipe) and afterwards sets the attention modules' head counts
  (:class:`TPPrune`).  The output layer is the model's output embeddings (LM
  heads) or else its last ``Linear``/``Conv`` module.

Columns (``fx`` fxprune, ``TP`` Torch-Pruning):

* ``analysis s``, ``prune s``: median of ``--repeat`` runs; ``prune s`` is the
  whole call (analysis included, on a deep copy for TP: the copy is not timed);
  ``TP/fx``: TP's prune time over fxprune's (above 1: fxprune is faster);
* ``check``: the same differential check for both results.  ``run`` -- the
  pruned model ran on the example inputs with unchanged output shapes;
  ``dead a/b`` -- additionally, a second pruning at the same settings restricted
  to the ``b`` groups that removed channels and contain no channel-mixing
  normalisation (LayerNorm, GroupNorm, RMSNorm; pruning those changes the
  statistics, so nothing equals a masked original) equals the original with the
  removed channels zeroed in every producer and consumer (float32, rtol = atol =
  1e-4); ``a`` of them were checked.  ``dead n/a`` -- every group that removed
  channels mixes through a norm.  Failures read ``SHAPE``, ``DIFF <max abs
  diff>``, ``run: <error>``.  fxprune's groups and masks come from its
  analysis (:func:`fxprune.testing.check.mask_original`); TP's from its groups'
  ``idxs`` (``pruner.step(interactive=True)``), mapped to the parameter
  dimensions that shrank.
* ``params``, ``MACs``: fraction left.  Parameters are counted the same way for
  both (unique tensors); MACs by each tool's own counter (fxprune's report,
  ``tp.utils.count_ops_and_params``: TP counts modules only, so matmuls of
  attention are not in its totals);
* ``lat/MACs``: CPU latency of the pruned model over the original's at batch 8
  (median of ``--latency-runs`` timings, one thread), divided by the MACs ratio:
  1.0 means latency shrank exactly as the MACs did, above 1 less than they did.
  ``*`` marks a result that does not run at batch 8 (a graph exported with the
  example batch), measured at the example batch instead.

Each model runs for each tool in a forked child, each of its steps (one
analysis, one prune, the check, the latency) within ``--timeout`` seconds: a
hang or a crash is one ``timeout`` / ``crash`` cell, the table goes on.  A
tool's error is the exception type in its cells.

Run:  python bench/compare_tp.py [--models zoo/resnet_basic,hf/gpt2] [--suite zoo|hf|all] [--repeat 3] [--timeout 30]
      [--tp-config plain|heads]
"""
from __future__ import annotations

import argparse
import copy
import importlib.metadata
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Callable, Iterable, Sequence

import torch

import fxprune
from fxprune.testing import hf_zoo, zoo
from fxprune.testing.check import mask_original

RATIO = 0.5
IMAGE = 64
BATCH = 8
RTOL = ATOL = 1e-4
MIXING_NORMS = ("LayerNorm", "GroupNorm", "RMSNorm", "RmsNorm")

ModelAndInputs = tuple[torch.nn.Module, tuple]


# -- the models -----------------------------------------------------------------------------------------
def _suites() -> dict[str, Callable[[], ModelAndInputs]]:
    """``{"zoo/name" or "hf/name": builder}`` of every model."""
    models: dict[str, Callable[[], ModelAndInputs]] = {f"zoo/{n}": f for n, f in sorted(zoo.ZOO.items())}
    models.update({f"hf/{n}": (lambda n=n: hf_zoo.build(n)) for n in hf_zoo.SUITE})
    return models


def _flat(out: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) model output: tensors, tuples, lists, dicts and ``ModelOutput``s."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flat(v)]
    return []


def _run(module: torch.nn.Module, inputs: tuple) -> list[torch.Tensor]:
    with torch.no_grad():
        return _flat(module(*inputs))


def build(name: str) -> tuple[torch.nn.Module, tuple, str]:
    """``(model, inputs, input label)``: a zoo model's square image input is resized to 64x64 if the model accepts it.

    The Hugging Face models keep their own inputs (their configs say 32x32 images).
    """
    model, inputs = _suites()[name]()
    if name.startswith("zoo/") and len(inputs) == 1 and inputs[0].dim() == 4 and inputs[0].is_floating_point() \
            and inputs[0].shape[-1] == inputs[0].shape[-2] != IMAGE:
        gen = torch.Generator().manual_seed(0)
        big = (torch.randn(*inputs[0].shape[:2], IMAGE, IMAGE, generator=gen),)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _run(model, big)
            inputs = big
        except Exception:  # noqa: BLE001 - fixed-size model (position embeddings, a flatten into fc)
            pass
    return model, inputs, "x".join(str(s) for s in inputs[0].shape)


def _batched(inputs: tuple, batch: int) -> tuple:
    """The inputs repeated along dim 0 to ``batch`` rows."""
    return tuple(x[torch.arange(batch) % x.shape[0]] if isinstance(x, torch.Tensor) and x.dim() else x
                 for x in inputs)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())  # unique tensors (tied weights once)


# -- measuring ------------------------------------------------------------------------------------------
def median_time(fn: Callable[[], Any], repeat: int, tick: Callable[..., None]) -> tuple[float, Any]:
    """``(median seconds, last result)`` of ``repeat`` calls of ``fn``; ``tick()`` after each (the time-out's clock)."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
        tick()
    return statistics.median(times), result


def latency(module: torch.nn.Module, inputs: tuple, runs: int) -> float:
    """Median seconds per forward of ``module`` on ``inputs`` (each timing repeats it to about 20 ms)."""
    with torch.no_grad():
        module(*inputs)
        t0 = time.perf_counter()
        module(*inputs)
        once = max(time.perf_counter() - t0, 1e-6)
        n = max(1, int(0.02 / once))
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            for _ in range(n):
                module(*inputs)
            samples.append((time.perf_counter() - t0) / n)
    return statistics.median(samples)


def latency_ratio(model: torch.nn.Module, pruned: torch.nn.Module, inputs: tuple, runs: int) -> tuple[float, bool]:
    """``(latency of pruned / latency of model, at batch 8)``; at the example batch if ``pruned`` refuses 8."""
    big = _batched(inputs, BATCH)
    try:
        _run(pruned, big)
    except Exception:  # noqa: BLE001 - exported with the example batch
        big = inputs
    return latency(pruned, big, runs) / latency(model, big, runs), big is not inputs


def compare(got: list[torch.Tensor], want: list[torch.Tensor]) -> str:
    """``""`` if the outputs agree (shapes, values to RTOL/ATOL), else what differs."""
    if len(got) != len(want) or any(a.shape != b.shape for a, b in zip(got, want)):
        return "SHAPE"
    worst = 0.0
    for a, b in zip(got, want):
        if a.is_floating_point():
            if a.numel() and not torch.allclose(a, b, rtol=RTOL, atol=ATOL):
                worst = max(worst, (a - b).abs().max().item())
        elif not torch.equal(a, b):
            return "DIFF (integer output)"
    return f"DIFF {worst:.2g}" if worst else ""


def run_check(model: torch.nn.Module, pruned: torch.nn.Module, inputs: tuple) -> str:
    """``run`` if ``pruned`` runs on ``inputs`` with the original's output shapes, else the failure."""
    try:
        got = _run(pruned, inputs)
    except Exception as exc:  # noqa: BLE001
        return f"run: {type(exc).__name__}"
    want = _run(model, inputs)
    if len(got) != len(want) or any(a.shape != b.shape for a, b in zip(got, want)):
        return "SHAPE"
    return "run"


def dead_verdict(diff: str, checked: int, removing: int) -> str:
    """The check cell: ``dead a/b``, ``dead n/a`` (every group removing channels mixes), a failure."""
    if not removing:
        return "run (nothing removed)"
    if diff:
        return f"{diff} ({checked}/{removing})"
    return f"dead {checked}/{removing}" if checked else "dead n/a"


# -- fxprune ----------------------------------------------------------------------------------------------
def work_fxprune(name: str, send: Callable[..., None], repeat: int, latency_runs: int) -> None:
    """Analysis and prune timings, check, params / MACs and latency of fxprune on ``name``."""
    model, inputs, _ = build(name)
    frontend = "auto" if name.startswith("hf/") else "fx"
    seconds, analysis = median_time(lambda: fxprune.analyze(model, inputs, frontend=frontend), repeat, send)
    send(analysis_s=seconds, frontend=str(analysis.frontend))
    seconds, result = median_time(lambda: fxprune.prune(model, inputs, ratio=RATIO, frontend=frontend), repeat,
                                   send)
    rep = result.report
    send(prune_s=seconds, params=_params(result.graph_module) / _params(model), macs=rep.macs_ratio)
    verdict = run_check(model, result.graph_module, inputs)
    if verdict == "run":
        analysis = result.analysis
        removing = {gid: chans for gid, chans in result.plan.items() if len(chans)}
        sub = {gid: chans for gid, chans in removing.items() if not analysis.groups[gid].mixing}
        diff = ""
        if sub:
            diff = compare(_run(fxprune.apply(analysis, sub), inputs), _run(mask_original(analysis, sub), inputs))
        verdict = dead_verdict(diff, len(sub), len(removing))
    send(check=verdict)
    ratio, at_batch = latency_ratio(model, result.graph_module, inputs, latency_runs)
    send(lat=ratio / rep.macs_ratio, lat_batch8=at_batch)


# -- Torch-Pruning ----------------------------------------------------------------------------------------
def _tp_inputs(inputs: tuple) -> Any:
    return inputs[0] if len(inputs) == 1 else inputs


def output_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layer(s) TP must not prune: the output embeddings (an LM head), else the last Linear/Conv module."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if isinstance(head, torch.nn.Module):
        return [head]
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))]
    return layers[-1:]


#: attribute names of separate q / k / v projections, and of head counts on an attention module
QKV_NAMES = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"), ("q_lin", "k_lin", "v_lin"), ("q", "k", "v"))
HEAD_ATTRS = ("num_heads", "num_attention_heads", "n_heads")

#: Torch-Pruning configuration: ``plain`` (the defaults) or ``heads`` (see :func:`attention_heads`)
TP_CONFIG = {"mode": "plain"}


def attention_heads(model: torch.nn.Module) -> dict[torch.nn.Module, tuple[int, Any]]:
    """``{q/k/v Linear: (heads, attention module)}`` of attention modules with separate q, k, v projections.

    Head counts come from the attention module (``num_heads``, ``num_attention_heads``,
    ``n_heads``, ``num_key_value_heads``) or else the model's config; fused projections
    (GPT-2's ``c_attn``, Phi-3's ``qkv_proj``, GPT-NeoX's ``query_key_value``) are not found.
    """
    cfg = getattr(model, "config", None)
    cfg_heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "num_heads", None)
    found: dict[torch.nn.Module, tuple[int, Any]] = {}
    for m in model.modules():
        for names in QKV_NAMES:
            lins = [getattr(m, n, None) for n in names]
            if not all(isinstance(lin, torch.nn.Linear) for lin in lins):
                continue
            heads = next((getattr(m, a) for a in HEAD_ATTRS if isinstance(getattr(m, a, None), int)), cfg_heads)
            kv = getattr(m, "num_key_value_heads", None) or getattr(cfg, "num_key_value_heads", None) or heads
            if isinstance(heads, int) and isinstance(kv, int):
                found.update({lins[0]: (heads, m), lins[1]: (kv, m), lins[2]: (kv, m)})
            break
    return found


def _head_dims(heads: dict[torch.nn.Module, tuple[int, Any]]) -> dict[int, tuple[Any, int]]:
    """``{id(attention module): (module, head dim)}``, before pruning (q's width over its heads)."""
    dims: dict[int, tuple[Any, int]] = {}
    for lin, (h, attn) in heads.items():
        names = next(n for n in QKV_NAMES if isinstance(getattr(attn, n[0], None), torch.nn.Linear))
        if lin is getattr(attn, names[0]) and h:
            dims[id(attn)] = (attn, lin.out_features // h)
    return dims


def _patch_heads(head_dims: dict[int, tuple[Any, int]]) -> None:
    """After TP removed whole heads: the attention modules' head-count attributes follow their q / k widths."""
    for attn, head_dim in head_dims.values():
        names = next(n for n in QKV_NAMES if isinstance(getattr(attn, n[0], None), torch.nn.Linear))
        q, k = getattr(attn, names[0]), getattr(attn, names[1])
        old = next((getattr(attn, a) for a in HEAD_ATTRS if isinstance(getattr(attn, a, None), int)), None)
        for a in HEAD_ATTRS:
            if isinstance(getattr(attn, a, None), int):
                setattr(attn, a, q.out_features // head_dim)
        if isinstance(getattr(attn, "num_key_value_heads", None), int):
            attn.num_key_value_heads = k.out_features // head_dim
        if isinstance(getattr(attn, "all_head_size", None), int) and old:
            attn.all_head_size = q.out_features


class TPPrune:
    """TP's MetaPruner at ratio 0.5, L1 magnitude, the output layer ignored.

    ``plain`` (the default): TP's defaults otherwise.  ``heads``: the q / k / v layers
    found by :func:`attention_heads` are given to ``num_heads`` with
    ``prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=0.5`` (TP's
    recipe for transformers), and after ``step()`` the head-count attributes of those
    modules are set to the heads left.
    """

    def __init__(self, model: torch.nn.Module, inputs: tuple) -> None:
        import torch_pruning as tp

        self.heads = attention_heads(model) if TP_CONFIG["mode"] == "heads" else {}
        self.head_dims = _head_dims(self.heads)
        extra: dict[str, Any] = {}
        if self.heads:
            extra = dict(num_heads={lin: h for lin, (h, _) in self.heads.items()}, prune_num_heads=True,
                         prune_head_dims=False, head_pruning_ratio=RATIO)
        self.pruner = tp.pruner.MetaPruner(model, _tp_inputs(inputs),
                                           importance=tp.importance.MagnitudeImportance(p=1),
                                           pruning_ratio=RATIO, ignored_layers=output_layers(model), **extra)

    def step(self) -> None:
        self.pruner.step()
        _patch_heads(self.head_dims)

    def interactive(self) -> Iterable[Any]:
        """The groups of ``step(interactive=True)``; heads patched once they are all seen."""
        yield from self.pruner.step(interactive=True)
        _patch_heads(self.head_dims)


def _owner_names(model: torch.nn.Module) -> dict[int, str]:
    """``{id(module or parameter): qualified name}`` of ``model``."""
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    names.update({id(p): n for n, p in model.named_parameters(remove_duplicate=False)})
    return names


def _is_mixing(model: torch.nn.Module, target: Any, name: str) -> bool:
    """A norm whose statistics mix channels (the module, or the module owning an unwrapped parameter)."""
    if isinstance(target, torch.nn.Parameter):
        owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    else:
        owner = target
    return any(key in type(owner).__name__ for key in MIXING_NORMS)


def _weight_dims(module: Any, pname: str, handler: str) -> tuple[int, ...] | None:
    """The dims of ``module.pname`` that TP's ``handler`` prunes for Linear / conv layers (``None``: by shape)."""
    if isinstance(module, torch.nn.Linear):
        return (0,) if handler == "prune_out_channels" or pname == "bias" else (1,)
    if isinstance(module, torch.nn.modules.conv._ConvNd):
        if pname == "bias":
            return (0,)
        out_dim = 1 if module.transposed else 0
        if handler == "prune_out_channels" or module.groups > 1:
            return (out_dim,)
        return (1 - out_dim,)
    return None


def tp_dead_check(model: torch.nn.Module, inputs: tuple, only: int | None = None) -> str:
    """TP's interactive pruning, groups mixing through a norm skipped, against the masked original.

    ``only``: prune just the ``only``-th checkable group (to find the group that breaks it)."""
    work = copy.deepcopy(model)
    masked = copy.deepcopy(model)
    mparams = dict(masked.named_parameters(remove_duplicate=False))
    names = _owner_names(work)
    # {(parameter, dim): original indices still there}: a dim read by a concatenation is pruned by several
    # groups, each with indices into the dim as the groups before it left it
    alive: dict[tuple[str, int], list[int]] = {}
    checked = removing = 0
    for group in TPPrune(work, inputs).interactive():
        items = [(dep.target.module, dep.handler.__name__, sorted(set(int(i) for i in idxs))) for dep, idxs in group]
        if not any(idxs for _, _, idxs in items):
            continue
        removing += 1
        if any(_is_mixing(work, t, names.get(id(t), "")) for t, _, _ in items):
            continue
        checked += 1
        if only is not None and checked - 1 != only:
            continue
        # parameter shapes before / after, by name: the dims that shrank are the ones TP pruned
        owned: list[tuple[str, str, Any, str, list[int]]] = []
        for target, handler, idxs in items:
            if not idxs:
                continue
            if isinstance(target, torch.nn.Parameter):
                owned.append((names[id(target)], "", target, handler, idxs))
            elif isinstance(target, torch.nn.Module) and id(target) in names:
                prefix = names[id(target)]
                for pname, _ in target.named_parameters(recurse=False):
                    owned.append((f"{prefix}.{pname}" if prefix else pname, pname, target, handler, idxs))
        before = {n: tuple(p.shape) for n, p in work.named_parameters(remove_duplicate=False)}
        group.prune()
        after = {n: tuple(p.shape) for n, p in work.named_parameters(remove_duplicate=False)}
        with torch.no_grad():
            for full, pname, target, handler, idxs in owned:
                if full not in after or before[full] == after[full]:
                    continue
                shrunk = tuple(d for d, (a, b) in enumerate(zip(before[full], after[full])) if a - b == len(idxs))
                dims = _weight_dims(target, pname, handler) if pname else None
                for d in (dims if dims is not None else shrunk):
                    if d in shrunk:
                        left = alive.setdefault((full, d), list(range(mparams[full].shape[d])))
                        gone = set(idxs)
                        mparams[full].index_fill_(d, torch.tensor([left[i] for i in idxs]), 0.0)
                        alive[full, d] = [o for i, o in enumerate(left) if i not in gone]
    if not checked:
        return dead_verdict("", 0, removing)
    return dead_verdict(compare(_run(work, inputs), _run(masked, inputs)), checked, removing)


def work_tp(name: str, send: Callable[..., None], repeat: int, latency_runs: int) -> None:
    """Analysis and prune timings, check, params / MACs and latency of Torch-Pruning on ``name``."""
    import torch_pruning as tp

    model, inputs, _ = build(name)
    ex = _tp_inputs(inputs)

    def analyse() -> Any:
        return tp.DependencyGraph().build_dependency(model, example_inputs=ex)

    seconds, _ = median_time(analyse, repeat, send)
    send(analysis_s=seconds)
    times, pruned = [], model
    for _ in range(repeat):
        pruned = copy.deepcopy(model)
        t0 = time.perf_counter()
        TPPrune(pruned, inputs).step()
        times.append(time.perf_counter() - t0)
        send()
    send(prune_s=statistics.median(times), params=_params(pruned) / _params(model))
    verdict = run_check(model, pruned, inputs)
    if verdict.startswith("run:"):  # the pruned model does not run: nothing to count or time
        send(check=verdict)
        return
    macs0, _ = tp.utils.count_ops_and_params(model, ex)
    macs1, _ = tp.utils.count_ops_and_params(pruned, ex)
    macs = macs1 / macs0 if macs0 else 1.0
    send(macs=macs)
    if verdict == "run":
        try:
            verdict = tp_dead_check(model, inputs)
        except Exception as exc:  # noqa: BLE001 - the interactive run fails where step() did not
            verdict = f"run; dead: {type(exc).__name__}"
    send(check=verdict)
    ratio, at_batch = latency_ratio(model, pruned, inputs, latency_runs)
    send(lat=ratio / macs, lat_batch8=at_batch)


# -- the forked children ----------------------------------------------------------------------------------
WORK = {"fx": work_fxprune, "tp": work_tp}


def _child(tool: str, name: str, conn: Connection, repeat: int, latency_runs: int) -> None:
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    def send(**values: Any) -> None:
        conn.send(values)

    try:
        WORK[tool](name, send, repeat, latency_runs)
    except Exception as exc:  # noqa: BLE001 - one tool's failure is its cells
        conn.send({"error": type(exc).__name__, "detail": "".join(
            traceback.format_exception_only(type(exc), exc)).strip()[:300]})
    conn.send({"done": True})
    conn.close()


def run_forked(tool: str, name: str, repeat: int, latency_runs: int, timeout: float) -> dict[str, Any]:
    """The values one tool's child sent for ``name``; ``error`` is ``timeout`` or ``crash`` if it did not finish.

    ``timeout`` bounds each step of the child (one analysis, one prune, the check, the latency): every
    message it sends restarts the clock."""
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(tool, name, child, repeat, latency_runs), daemon=True)
    proc.start()
    child.close()
    cells: dict[str, Any] = {}
    deadline = time.monotonic() + (timeout if timeout > 0 else float("inf"))
    while True:
        left = deadline - time.monotonic()
        try:
            ready = left > 0 and parent.poll(min(left, 3600))
        except (EOFError, OSError):
            ready = False
        if not ready:
            if time.monotonic() >= deadline:
                cells["error"] = "timeout"
                proc.kill()
            break
        try:
            msg = parent.recv()
        except EOFError:
            cells.setdefault("error", f"crash ({proc.exitcode})")
            break
        if msg.get("done"):
            break
        cells.update(msg)
        deadline = time.monotonic() + (timeout if timeout > 0 else float("inf"))
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    if proc.exitcode not in (0, None) and "error" not in cells and "check" not in cells:
        cells["error"] = f"crash ({proc.exitcode})"
    parent.close()
    return cells


# -- the table ----------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One model: its input and the cells of both tools."""

    model: str
    input: str = ""
    fx: dict[str, Any] = field(default_factory=dict)
    tp: dict[str, Any] = field(default_factory=dict)


def _cell(cells: dict[str, Any], key: str, fmt: str) -> str:
    if key in cells:
        value = cells[key]
        return format(value, fmt) if isinstance(value, float) else str(value)
    return cells.get("error", "-")


def _lat(cells: dict[str, Any]) -> str:
    text = _cell(cells, "lat", ".2f")
    return text + ("" if cells.get("lat_batch8", True) or "lat" not in cells else "*")


def _check(cells: dict[str, Any]) -> str:
    if "check" in cells:
        return str(cells["check"])
    return cells.get("error", "-")


def table(rows: Sequence[Row]) -> str:
    """The Markdown table of both tools' cells."""
    lines = ["| model | input | fx front end | analysis s fx | analysis s TP | prune s fx | prune s TP | TP/fx "
             "| check fx | check TP | params fx | params TP | MACs fx | MACs TP | lat/MACs fx | lat/MACs TP |",
             "|---|---|---|--:|--:|--:|--:|--:|---|---|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        fx, tp = r.fx, r.tp
        speed = (f"{tp['prune_s'] / fx['prune_s']:.2f}" if "prune_s" in fx and "prune_s" in tp and fx["prune_s"]
                 else "-")
        lines.append(
            f"| {r.model} | {r.input} | {fx.get('frontend', '-')} | {_cell(fx, 'analysis_s', '.3f')} "
            f"| {_cell(tp, 'analysis_s', '.3f')} | {_cell(fx, 'prune_s', '.3f')} | {_cell(tp, 'prune_s', '.3f')} "
            f"| {speed} | {_check(fx)} | {_check(tp)} | {_cell(fx, 'params', '.1%')} | {_cell(tp, 'params', '.1%')} "
            f"| {_cell(fx, 'macs', '.1%')} | {_cell(tp, 'macs', '.1%')} | {_lat(fx)} | {_lat(tp)} |")
    return "\n".join(lines)


def summary(rows: Sequence[Row]) -> list[str]:
    """Totals: summed seconds over the models both tools finished, and how many results pass each check."""
    both = [r for r in rows if "prune_s" in r.fx and "prune_s" in r.tp]
    out = []
    if both:
        fa, ta = sum(r.fx.get("analysis_s", 0) for r in both), sum(r.tp.get("analysis_s", 0) for r in both)
        fp, tpp = sum(r.fx["prune_s"] for r in both), sum(r.tp["prune_s"] for r in both)
        out.append(f"over the {len(both)} models where both prune calls returned: analysis fx {fa:.2f} s, "
                   f"TP {ta:.2f} s; prune fx {fp:.2f} s, TP {tpp:.2f} s (TP/fx {tpp / fp:.2f})")
    for tool in ("fx", "tp"):
        checks = [getattr(r, tool).get("check", getattr(r, tool).get("error", "-")) for r in rows]
        passed = sum(1 for c in checks if c.startswith("dead") and ":" not in c)
        dead = sum(1 for c in checks if c.startswith("dead ") and c != "dead n/a")
        nothing = sum(1 for c in checks if c == "run (nothing removed)")
        out.append(f"{'fxprune' if tool == 'fx' else 'Torch-Pruning'}: {passed}/{len(rows)} results prune, run with "
                   f"unchanged output shapes and pass the dead-channel check where it applies ({dead} with at "
                   f"least one group checked); {nothing} removed nothing")
    errors = [(r.model, t, c["detail"]) for r in rows for t, c in (("fx", r.fx), ("TP", r.tp)) if "detail" in c]
    if errors:
        out.append("")
        out.append("Errors:")
        out.extend(f"- {m} ({t}): {d.splitlines()[-1][:200]}" for m, t, d in errors)
    return out


def _warm_up(hf: bool) -> None:
    """Imports and first-call caches paid once in the parent, before the children fork."""
    import torch_pruning as tp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, inputs = zoo.lenet5()
        fxprune.prune(model, inputs, ratio=RATIO)
        TPPrune(copy.deepcopy(model), inputs).step()
        if hf:
            model, inputs = hf_zoo.build("bert")
            fxprune.prune(model, inputs, ratio=RATIO, frontend="auto")
            tp.DependencyGraph().build_dependency(model, example_inputs=inputs[0])


def _select(models: str, suite: str, parser: argparse.ArgumentParser) -> list[str]:
    known = _suites()
    if not models:
        return [n for n in known if suite == "all" or n.startswith(suite + "/")]
    names = []
    for item in (m.strip() for m in models.split(",") if m.strip()):
        hits = [item] if item in known else [n for n in known if n.split("/", 1)[1] == item]
        if not hits:
            parser.error(f"unknown model {item!r}; known: {', '.join(known)}")
        names.extend(h for h in hits if h not in names)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated names, zoo/NAME or hf/NAME (a bare NAME "
                                                     "takes both suites' models of that name); default: --suite")
    parser.add_argument("--suite", default="all", choices=("zoo", "hf", "all"), help="models when --models is empty")
    parser.add_argument("--repeat", type=int, default=3, help="median of N runs of analysis and of prune")
    parser.add_argument("--latency-runs", type=int, default=5, help="median of N latency timings")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds per step (one analysis, one prune, the check, the latency) of a model "
                             "and tool (0: none)")
    parser.add_argument("--tp-config", default="plain", choices=("plain", "heads"),
                        help="Torch-Pruning's configuration: plain (its defaults) or heads (num_heads of "
                             "separate q/k/v layers, whole heads pruned; see TPPrune)")
    args = parser.parse_args(argv)
    names = _select(args.models, args.suite, parser)
    TP_CONFIG["mode"] = args.tp_config  # before the children fork
    try:
        tp_version = importlib.metadata.version("torch-pruning")
    except importlib.metadata.PackageNotFoundError:
        parser.error("Torch-Pruning is not installed: pip install 'fxprune[bench]' (torch-pruning==1.6.1)")
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    _warm_up(any(n.startswith("hf/") for n in names))
    rows = []
    for name in names:
        row = Row(name)
        try:
            row.input = build(name)[2]
        except Exception as exc:  # noqa: BLE001 - the builder itself fails (transformers missing or changed)
            row.input = f"build: {type(exc).__name__}"
            rows.append(row)
            continue
        row.fx = run_forked("fx", name, args.repeat, args.latency_runs, args.timeout)
        row.tp = run_forked("tp", name, args.repeat, args.latency_runs, args.timeout)
        rows.append(row)
        print(f"  {name}: fx {row.fx.get('check', row.fx.get('error', '-'))}, "
              f"TP {row.tp.get('check', row.tp.get('error', '-'))}", file=sys.stderr, flush=True)
    try:
        transformers = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        transformers = "absent"
    print(f"fxprune {fxprune.__version__} ({os.path.dirname(os.path.dirname(fxprune.__file__))}), torch-pruning {tp_version}, torch {torch.__version__}, "
          f"transformers {transformers}, Python {platform.python_version()}; {os.cpu_count()} CPUs, 1 thread; "
          f"ratio {RATIO}, median of {args.repeat}, TP config {args.tp_config}; total {time.perf_counter() - start:.0f} s")
    print()
    print(table(rows))
    print()
    print("\n".join(summary(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
