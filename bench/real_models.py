"""Real library architectures: how much of each tiny ``transformers`` model fxprune prunes.

For every model of :data:`fxprune.testing.hf_zoo.SUITE` (tiny configs, random
weights, no download): analyse it, prune every group by half (L1, ratio 0.5),
run the invariant checker (:func:`fxprune.testing.check_pruning`, float64,
one random plan of each kind), and print a Markdown table:

* ``nodes``, ``groups``: graph nodes and coupled channel groups;
* ``barriers``: channel barriers (barriers holding parameter channels back,
  :func:`~fxprune.testing.hf_zoo.channel_barriers`) / all barriers (mask and
  index building included);
* ``layers shrunk``: non-output linear and conv layers whose weight lost rows or
  columns (:func:`~fxprune.testing.hf_zoo.layers_shrunk`; the classifier or LM
  head, whose outputs are the model's, is not counted);
* ``params``, ``MACs``: what is left after the ratio-0.5 plan;
* ``analysis s``: seconds of :func:`fxprune.analyze` (capture, shapes, channels);
* ``check``: ``ok`` or the invariant that failed.

Then, per model, the ops of its channel barriers.  A model that fails is one
row with its error; the others go on (``--timeout`` seconds per model).

Run:  python bench/real_models.py [--models llama,gpt2] [--frontend fx|export|auto] [--timeout S]

``--frontend auto`` (the default) is fxprune's ``frontend="auto"``: fx, and
export where fx cannot trace or leaves barriers; the table names the one chosen
(``auto: export``).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

import fxprune
from fxprune.testing import check_pruning, hf_zoo


@dataclass
class Row:
    """One model's line of the table."""

    model: str
    frontend: str = "-"
    nodes: int = 0
    groups: int = 0
    channel_barriers: int = 0
    barriers: int = 0
    shrunk: int = 0
    counted: int = 0
    params: float = 1.0
    macs: float = 1.0
    seconds: float = 0.0
    check: str = "-"
    error: str = ""
    done: bool = False
    blocking: dict[str, int] = field(default_factory=dict)

    @property
    def shrunk_fraction(self) -> float:
        return self.shrunk / self.counted if self.counted else 0.0


class Timeout(Exception):
    """The model ran past ``--timeout``."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`Timeout` in the main thread after ``seconds`` (no limit if <= 0)."""
    if seconds <= 0:
        yield
        return

    def _alarm(signum: int, frame: Any) -> None:
        raise Timeout(f"over {seconds:g} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def analyse(model: torch.nn.Module, inputs: tuple, frontend: str) -> tuple[Any, str]:
    """``(analysis, front end label)``: with ``auto``, the label names the front end chosen."""
    analysis = fxprune.analyze(model, inputs, frontend=frontend)
    return analysis, (f"auto: {analysis.frontend}" if frontend == "auto" else str(analysis.frontend))


def measure(row: Row, frontend: str, *, check: bool = True) -> None:
    """Analyse, prune (ratio 0.5) and check one model of the suite, filling ``row`` as it goes."""
    model, inputs = hf_zoo.build(row.model)
    t0 = time.perf_counter()
    analysis, row.frontend = analyse(model, inputs, frontend)
    row.seconds = time.perf_counter() - t0
    row.nodes = len(analysis.graph_module.graph.nodes)
    row.groups = len(analysis.groups)
    blocking = hf_zoo.channel_barriers(analysis)
    row.channel_barriers, row.barriers = len(blocking), len(analysis.barriers)
    row.blocking = dict(collections.Counter(b.op for b in blocking))
    result = fxprune.prune(model, inputs, ratio=0.5, analysis=analysis)
    shrunk, counted = hf_zoo.layers_shrunk(model, result.graph_module, analysis.graph_module)
    row.shrunk, row.counted = len(shrunk), len(counted)
    row.params, row.macs = result.report.params_ratio, result.report.macs_ratio
    row.done = True
    if check:
        check_pruning(model, inputs, ratio=0.5, plans=1, frontend=str(analysis.frontend))
        row.check = "ok"


def run(name: str, frontend: str, timeout: float, check: bool) -> Row:
    """:func:`measure`, a failure or time-out caught into the row (the check column, or the whole row)."""
    row = Row(name)
    try:
        with time_limit(timeout):
            measure(row, frontend, check=check)
    except Exception as exc:  # noqa: BLE001 - one model's failure is one row
        text = str(exc).strip()
        message = f"{type(exc).__name__}: {text.splitlines()[0][:160] if text else ''}"
        if row.done:
            row.check = message
        else:
            row.error = message
    return row


def table(rows: list[Row], checked: bool = True) -> str:
    """The Markdown table of ``rows``, then each model's blocking barrier ops (``checked``: the check ran)."""
    lines = ["| model | front end | nodes | groups | barriers (channel / all) | layers shrunk | params left "
             "| MACs left | analysis s | check |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in rows:
        if r.error:
            lines.append(f"| {r.model} | {r.frontend} | | | | | | | | error: {r.error} |")
            continue
        lines.append(f"| {r.model} | {r.frontend} | {r.nodes} | {r.groups} | {r.channel_barriers} / {r.barriers} "
                     f"| {r.shrunk}/{r.counted} ({r.shrunk_fraction:.0%}) | {r.params:.1%} | {r.macs:.1%} "
                     f"| {r.seconds:.2f} | {r.check} |")
    ok = [r for r in rows if not r.error]
    full = sum(1 for r in ok if (r.check == "ok" or not checked) and not r.channel_barriers
               and r.shrunk_fraction >= 0.8)
    lines.append("")
    lines.append(f"{full}/{len(rows)} models {'pass the check ' if checked else ''}with no channel barrier "
                 "and >= 80% of their layers shrunk" + ("." if checked else " (not checked)."))
    blocked = [r for r in ok if r.blocking]
    if blocked:
        lines.append("")
        lines.append("Channel barriers by op:")
        lines.append("")
        for r in blocked:
            ops = ", ".join(f"`{op}` x{n}" for op, n in sorted(r.blocking.items()))
            lines.append(f"- {r.model}: {ops}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated names (default: the whole suite: "
                                                     + ", ".join(sorted(hf_zoo.SUITE)) + ")")
    parser.add_argument("--frontend", default="auto", choices=("fx", "export", "auto"))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per model (0: none)")
    parser.add_argument("--no-check", action="store_true", help="skip check_pruning (faster)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()] or list(hf_zoo.SUITE)
    unknown = [n for n in names if n not in hf_zoo.SUITE]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; the suite: {sorted(hf_zoo.SUITE)}")
    torch.set_num_threads(1)
    import transformers

    start = time.perf_counter()
    rows = []
    for name in names:
        rows.append(run(name, args.frontend, args.timeout, not args.no_check))
        print(f"  {name}: {rows[-1].error or 'done'}", file=sys.stderr, flush=True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, ratio 0.5, "
          f"frontend {args.frontend}; total {time.perf_counter() - start:.0f} s")
    print()
    print(table(rows, checked=not args.no_check))
    return 0


if __name__ == "__main__":
    sys.exit(main())
