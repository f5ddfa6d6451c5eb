"""Does the emitted GraphModule cost anything over an eager module of the same widths?

Issue 14's latency target reads: "pruned-model latency ratio within 1.1x of the MACs ratio at batch 8
(no overhead from the emitted GraphModule versus an eager module of the same widths)".  On tiny
models (``bench/compare_tp.py``) the latency column is per-op Python overhead and noise; here the
models are large enough that compute dominates, and the parenthesis is measured directly.

For each model (zoo classes at the sizes of ``bench/latency.py``, and Hugging Face models built from
configs with hidden size 512: no download), at batch 8, ``fxprune.prune(model, inputs, ratio=0.5)``
(``uniform=True`` for the Hugging Face models, so that ``materialize`` can rebuild them from a config)
and then, interleaved in rounds (the order rotates every round, each model warmed up first), each
sample as many forwards as take ``--min-time`` seconds, ``--rounds`` rounds:

* (a) ``orig``: the original eager model;
* (b) ``graph``: fxprune's pruned ``GraphModule``;
* (c) ``eager``: the same widths as the user's own class, ``result.materialize()``;
* (d) ``tp``: Torch-Pruning's pruned model (``--tp``, torch-pruning 1.6.1, L1, the output layer
  kept), where it runs.

Every ratio is the median over rounds of the per-round ratio (both models measured within seconds of
each other, so slow drifts of the machine's load cancel).  Columns: ``MACs`` (fxprune's MACs ratio),
``graph/orig`` and ``eager/orig`` (latency ratios), ``graph/eager`` (the GraphModule's overhead: 1.00
is none), ``lat/MACs`` (``graph/orig`` over ``MACs``: 1.0 means latency shrank exactly as the MACs
did; issue 14's target is at most 1.1), ``orig ms`` (the original's median per forward), and with
``--tp`` ``tp/orig`` and TP's ``lat/MACs`` (by TP's own MACs count).  ``max diff`` is the
largest difference between (b) and (c) on the batch-8 inputs; ``front end`` is the analysis' (``fx``, or
``export`` where ``frontend="auto"`` chose ``torch.export``); ``eager`` says what (c) is: ``copy``
(the original class deep-copied and resized) or ``config`` (a Hugging Face model rebuilt from a config
with the pruned widths).  ``--round-to 8`` keeps widths multiples of 8.  ``--breakdown`` times every
node alone in the original and the pruned graph and adds: ``MAC ops' share`` (of the original's summed
node times, the nodes with MACs: conv, linear, matmul, attention), ``MAC ops' time`` and ``others'
time`` (pruned over original, summed node times of each kind; ``-`` for a graph captured by
``torch.export``, which cannot be put in eval mode for the node timer).

Run:  python bench/graph_overhead.py [--models resnet,vit,...] [--rounds 15] [--min-time 0.2] [--threads 1]
      [--round-to 8] [--tp] [--breakdown] [--tiny]
"""
from __future__ import annotations

import argparse
import copy
import io
import multiprocessing as mp
import platform
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch

import fxprune
from fxprune.testing import zoo

BATCH = 8


@dataclass
class Case:
    name: str
    build: Callable[[bool], tuple[torch.nn.Module, tuple]]   # tiny -> (model, batch-8 inputs)
    hf: bool = False
    options: dict | None = None


def _hf(kind: str, tiny: bool) -> tuple[torch.nn.Module, tuple]:
    import transformers as T

    hidden, layers, inter, heads, seq, image = (32, 2, 64, 4, 8, 32) if tiny else (512, 4, 1376, 8, 128, 128)
    torch.manual_seed(0)
    if kind == "llama":
        model = T.LlamaForCausalLM(T.LlamaConfig(
            vocab_size=1024, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=heads // 2, max_position_embeddings=max(seq, 64),
            use_cache=False))
        return model.eval(), (torch.randint(0, 1024, (BATCH, seq)),)
    if kind == "bert":
        model = T.BertModel(T.BertConfig(
            vocab_size=1024, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
            num_attention_heads=heads, max_position_embeddings=max(seq, 64)), add_pooling_layer=False)
        return model.eval(), (torch.randint(0, 1024, (BATCH, seq)),)
    if kind == "vit":
        model = T.ViTForImageClassification(T.ViTConfig(
            hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
            image_size=image, patch_size=16 if not tiny else 8, num_labels=10))
        return model.eval(), (torch.randn(BATCH, 3, image, image),)
    raise ValueError(kind)


def _zoo(kind: str, tiny: bool) -> tuple[torch.nn.Module, tuple]:
    torch.manual_seed(0)
    if kind == "resnet":
        widths, side = ((8, 16, 16, 32), 16) if tiny else ((32, 64, 128, 256), 64)
        return (zoo.ResNet(zoo.BasicBlock, (2, 2, 2, 2), widths=widths).eval(),
                (torch.randn(BATCH, 3, side, side),))
    if kind == "mobilenet_v2":
        if tiny:
            return zoo.MobileNetV2().eval(), (torch.randn(BATCH, 3, 32, 32),)
        setting = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2), (6, 96, 2, 1))
        return (zoo.MobileNetV2(stem_channels=32, last_channels=320, setting=setting).eval(),
                (torch.randn(BATCH, 3, 96, 96),))
    if kind == "vit":
        dim, depth, side = (32, 1, 32) if tiny else (192, 4, 64)
        return (zoo.VisionTransformer(img_size=side, embed_dim=dim, depth=depth, num_heads=4 if tiny else 6).eval(),
                (torch.randn(BATCH, 3, side, side),))
    if kind == "llama":
        dim, layers, inter, seq = (32, 1, 64, 8) if tiny else (256, 4, 768, 64)
        model = zoo.Llama(vocab_size=512, dim=dim, n_layers=layers, n_heads=8 if not tiny else 4,
                          n_kv_heads=4 if not tiny else 2, intermediate_size=inter, max_seq_len=max(seq, 64))
        return model.eval(), (torch.randint(0, 512, (BATCH, seq)),)
    raise ValueError(kind)


CASES = {
    "resnet": Case("zoo resnet_basic w32-256 8x3x64x64", lambda t: _zoo("resnet", t)),
    "mobilenet_v2": Case("zoo mobilenet_v2 c16-96 8x3x96x96", lambda t: _zoo("mobilenet_v2", t)),
    "vit": Case("zoo vit d192 depth4 8x3x64x64", lambda t: _zoo("vit", t)),
    "llama": Case("zoo llama d256 4 layers 8x64", lambda t: _zoo("llama", t)),
    "hf_llama": Case("hf llama h512 4 layers 8x128", lambda t: _hf("llama", t), hf=True),
    "hf_bert": Case("hf bert h512 4 layers 8x128", lambda t: _hf("bert", t), hf=True),
    "hf_vit": Case("hf vit h512 4 layers 8x3x128x128", lambda t: _hf("vit", t), hf=True),
}
TINY_NAMES = {"resnet": "zoo resnet_basic w8-32 8x3x16x16", "mobilenet_v2": "zoo mobilenet_v2 small 8x3x32x32",
              "vit": "zoo vit d32 depth1 8x3x32x32", "llama": "zoo llama d32 1 layer 8x8",
              "hf_llama": "hf llama h32 2 layers 8x8", "hf_bert": "hf bert h32 2 layers 8x8",
              "hf_vit": "hf vit h32 2 layers 8x3x32x32"}


def _tp_prune(model: torch.nn.Module, inputs: tuple) -> tuple[torch.nn.Module, float]:
    """Torch-Pruning's L1 pruning at 0.5 (the last Linear/Conv kept) and its own MACs ratio."""
    import torch_pruning as tp

    model = copy.deepcopy(model)
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    ignored = [out] if isinstance(out, torch.nn.Module) else layers[-1:]
    ex = inputs[0]
    macs0, _ = tp.utils.count_ops_and_params(model, ex)
    pruner = tp.pruner.MetaPruner(model, ex, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=ignored)
    pruner.step()
    macs1, _ = tp.utils.count_ops_and_params(model, ex)
    with torch.no_grad():
        model.eval()(*inputs)
    return model, macs1 / macs0


def _tp_child(model: torch.nn.Module, inputs: tuple, conn: Any) -> None:
    try:
        pruned, macs = _tp_prune(model, inputs)
        buffer = io.BytesIO()
        torch.save((pruned, macs), buffer)
        conn.send(("ok", buffer.getvalue()))
    except BaseException as exc:  # noqa: BLE001 -- reported as the TP cells
        conn.send(("error", type(exc).__name__))


def tp_prune(model: torch.nn.Module, inputs: tuple, timeout: float) -> tuple[torch.nn.Module, float] | str:
    """:func:`_tp_prune` in a forked child (TP can hang: ``timeout``); the pruned model or an error's name."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_tp_child, args=(model, inputs, send), daemon=True)
    child.start()
    send.close()
    try:
        if not recv.poll(timeout):
            return "timeout"
        status, payload = recv.recv()
    except EOFError:
        return "crash"
    finally:
        child.kill()
        child.join()
    if status != "ok":
        return payload
    return torch.load(io.BytesIO(payload), weights_only=False)


def _output(y: Any) -> torch.Tensor:
    if isinstance(y, torch.Tensor):
        return y
    if isinstance(y, dict):
        return next(v for v in y.values() if isinstance(v, torch.Tensor))
    if isinstance(y, (tuple, list)):
        return _output(y[0])
    return _output(y.to_tuple() if hasattr(y, "to_tuple") else vars(y))


def measure(models: dict[str, torch.nn.Module], inputs: tuple, rounds: int, min_time: float,
            warmup: int) -> dict[str, list[float]]:
    """``{name: [seconds per forward, one per round]}``, the models interleaved, the order rotating."""
    names = list(models)
    calls = {}
    with torch.no_grad():
        for name in names:
            fn = models[name]
            for _ in range(warmup):
                fn(*inputs)
            number, took = 1, 0.0
            while True:                                # calls per sample: at least min_time seconds
                t0 = time.perf_counter()
                for _ in range(number):
                    fn(*inputs)
                took = time.perf_counter() - t0
                if took >= min_time or number >= 1 << 16:
                    break
                number = max(2 * number, int(number * min_time / max(took, 1e-9)) + 1)
            calls[name] = number
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                fn, number = models[name], calls[name]
                fn(*inputs)                            # one untimed call: caches warm for this model
                t0 = time.perf_counter()
                for _ in range(number):
                    fn(*inputs)
                seconds[name].append((time.perf_counter() - t0) / number)
    return seconds


def ratio(seconds: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of ``a``'s time over ``b``'s in the same round."""
    return statistics.median(x / y for x, y in zip(seconds[a], seconds[b]))


def breakdown(result: Any, inputs: tuple) -> dict[str, float]:
    """Where the time goes: every call node timed in isolation (:func:`fxprune.analysis.latency.time_nodes`)
    in the analysed original graph and in the pruned one (matched by node name), split into the nodes
    with MACs (conv, linear, matmul, attention) and the rest (norms, activations, adds, layout ops)."""
    from fxprune.analysis.cost import node_macs
    from fxprune.analysis.latency import LatencyConfig, time_nodes

    analysis = result.analysis
    config = LatencyConfig(threads=None, cache=False)
    before = time_nodes(analysis.graph_module, inputs, config)
    after = time_nodes(result.graph_module, inputs, config)
    macs = {n.name: node_macs(analysis.graph_module, n, analysis.registry) for n in analysis.graph_module.graph.nodes}
    mac0 = sum(t for name, t in before.items() if macs.get(name, 0) > 0)
    mac1 = sum(t for name, t in after.items() if macs.get(name, 0) > 0)
    rest0, rest1 = sum(before.values()) - mac0, sum(after.values()) - mac1
    return {"mac_share": mac0 / (mac0 + rest0), "mac_time": mac1 / mac0, "rest_time": rest1 / rest0 if rest0 else 1.0}


def run_case(key: str, case: Case, args: argparse.Namespace) -> dict[str, Any]:
    model, inputs = case.build(args.tiny)
    options = dict(case.options or {})
    if case.hf:
        options.update(frontend="auto", uniform=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fxprune.prune(model, inputs, ratio=0.5, round_to=args.round_to, **options)
        kind = "copy"
        try:
            eager = result.materialize()
            kind = "config" if case.hf else "copy"
        except fxprune.errors.MaterializeError:   # a config cannot express the widths: the resized copy
            eager = result.materialize(hf_config=False)
    graph = result.graph_module.eval()
    eager.eval()
    with torch.no_grad():
        diff = (_output(graph(*inputs)) - _output(eager(*inputs))).abs().max().item()
    models: dict[str, Any] = {"orig": model, "graph": graph, "eager": eager}
    row: dict[str, Any] = {"name": TINY_NAMES[key] if args.tiny else case.name, "macs": result.report.macs_ratio,
                           "diff": diff, "kind": kind, "frontend": result.analysis.frontend}
    if args.tp:
        got = tp_prune(model, inputs, args.tp_timeout)
        if isinstance(got, str):      # TP fails or hangs on some models: a cell, not a crash
            row["tp_error"] = got
        else:
            models["tp"], row["tp_macs"] = got[0].eval(), got[1]
    if args.breakdown and result.analysis.frontend == "fx":   # an exported graph cannot be put in eval mode
        row.update(breakdown(result, inputs))
    seconds = measure(models, inputs, args.rounds, args.min_time, args.warmup)
    row["orig_ms"] = statistics.median(seconds["orig"]) * 1e3
    row["graph"], row["eager"] = ratio(seconds, "graph", "orig"), ratio(seconds, "eager", "orig")
    row["overhead"] = ratio(seconds, "graph", "eager")
    if "tp" in models:
        row["tp"] = ratio(seconds, "tp", "orig")
    return row


COLUMNS = ["model", "front end", "eager", "MACs", "graph/orig", "eager/orig", "graph/eager", "lat/MACs", "orig ms",
           "max diff"]


def table_row(row: dict[str, Any], tp: bool, breakdown_columns: bool = False) -> str:
    cells = [row["name"], row["frontend"], row["kind"], f"{row['macs']:.1%}", f"{row['graph']:.3f}",
             f"{row['eager']:.3f}", f"{row['overhead']:.3f}", f"{row['graph'] / row['macs']:.2f}",
             f"{row['orig_ms']:.1f}",
             f"{row['diff']:.1e}"]
    if "mac_share" in row:
        cells += [f"{row['mac_share']:.0%}", f"{row['mac_time']:.3f}", f"{row['rest_time']:.3f}"]
    elif breakdown_columns:
        cells += ["-"] * 3
    if tp:
        if "tp" in row:
            cells += [f"{row['tp_macs']:.1%}", f"{row['tp']:.3f}", f"{row['tp'] / row['tp_macs']:.2f}"]
        else:
            cells += [row.get("tp_error", "-")] * 3
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--models", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (samples per model)")
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per sample (at least)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed forwards per model first")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--round-to", type=int, default=1, help="keep widths multiples of this")
    parser.add_argument("--tp", action="store_true", help="also Torch-Pruning's pruned model (torch-pruning 1.6.1)")
    parser.add_argument("--tp-timeout", type=float, default=120, help="seconds TP may take to prune a model")
    parser.add_argument("--breakdown", action="store_true",
                        help="time every node alone: the share of the original's time in ops with MACs, and "
                             "the pruned/original time of those ops and of the others")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the smoke test)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keys = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CASES]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {', '.join(CASES)}")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread(s), "
          f"batch {BATCH}, ratio 0.5, round_to {args.round_to}, {args.rounds} rounds of >= {args.min_time} s")
    print()
    columns = COLUMNS + (["MAC ops' share", "MAC ops' time", "others' time"] if args.breakdown else []) + (
        ["MACs TP", "tp/orig", "lat/MACs TP"] if args.tp else [])
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for key in keys:
        print(table_row(run_case(key, CASES[key], args), args.tp, args.breakdown), flush=True)


if __name__ == "__main__":
    main()
