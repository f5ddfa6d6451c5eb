"""Plots of pruning results (matplotlib, an optional dependency: ``pip install fxprune[plot]``).

* :func:`plot_groups` -- kept and removed output channels of every layer of a
  pruning :class:`~fxprune.report.Report` (or a :class:`~fxprune.PruneResult`);
* :func:`plot_history` -- accuracy versus compression and MACs over the rounds
  of a schedule's :class:`~fxprune.schedules.History`.

Both write a PNG (any format matplotlib infers from the suffix) atomically and
return the path.  Nothing is shown on screen (the ``Agg`` backend is used).

Example:
    >>> import os, tempfile, torch, fxprune
    >>> from fxprune.plot import plot_groups
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> result = fxprune.prune(model, (torch.randn(2, 4),), ratio=0.5)
    >>> path = plot_groups(result, os.path.join(tempfile.mkdtemp(), "groups.png"))
    >>> os.path.getsize(path) > 0
    True
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["plot_groups", "plot_history"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError("plotting needs matplotlib: pip install 'fxprune[plot]' (or matplotlib)") from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> str:
    """Save ``fig`` through a temporary file in the target directory, then move it into place."""
    target = Path(path)
    if not target.parent.is_dir():
        raise ConfigError(f"cannot write {str(target)!r}: the directory {str(target.parent)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=target.suffix or ".png", dir=str(target.parent))
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(target)


def plot_groups(result: Any, path: str | os.PathLike) -> str:
    """A bar chart of kept and removed output channels per layer; returns ``path``.

    Args:
        result: a :class:`~fxprune.report.Report` or anything with a ``report``
            attribute (a :class:`~fxprune.PruneResult`).
        path: the image file to write.
    """
    report = getattr(result, "report", result)
    rows = [r for r in getattr(report, "layers", ()) if r.width_before]
    if not rows:
        raise ConfigError("the report has no layer with channels to plot")
    plt = _pyplot()
    kept = [r.width_after[0] for r in rows]
    removed = [r.width_before[0] - r.width_after[0] for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * len(rows)), 4.0))
    x = range(len(rows))
    ax.bar(x, kept, label="kept", color="#3b7dd8")
    ax.bar(x, removed, bottom=kept, label="removed", color="#d8d8d8")
    ax.set_xticks(list(x), [r.name for r in rows], rotation=90, fontsize=7)
    ax.set_ylabel("output channels")
    ax.set_title(f"params {report.params_ratio:.1%}, MACs {report.macs_ratio:.1%} of the original")
    ax.legend()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_history(history: Any, path: str | os.PathLike) -> str:
    """Accuracy versus compression (params) and MACs over a schedule's rounds; returns ``path``.

    Rounds without an accuracy (no ``evaluate`` callback) are plotted by size only;
    rejected rounds are drawn hollow, the result round is circled.
    """
    rounds = list(history.rounds)
    if not rounds:
        raise ConfigError("the history has no round to plot")
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 4.0))
    comp = [r.metrics.get("compression", 1.0) for r in rounds]
    macs = [r.metrics.get("macs_ratio", 1.0) for r in rounds]
    acc = [r.metrics.get("accuracy") for r in rounds]
    has_acc = all(a is not None for a in acc)
    y = acc if has_acc else [r.metrics.get("params_ratio", 1.0) for r in rounds]
    ylabel = "accuracy (%)" if has_acc else "params (fraction of the original)"
    for ax, xs, xlabel in ((left, comp, "compression (params before / after)"),
                           (right, macs, "MACs (fraction of the original)")):
        ax.plot(xs, y, color="#3b7dd8", linewidth=1)
        for r, xv, yv in zip(rounds, xs, y):
            ax.scatter([xv], [yv], facecolors="#3b7dd8" if r.accepted else "none", edgecolors="#3b7dd8", zorder=3)
            ax.annotate(str(r.round), (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize=7)
            if r.round == history.best_round:
                ax.scatter([xv], [yv], s=160, facecolors="none", edgecolors="#d83b3b", zorder=4)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{history.schedule}: {len(rounds)} rounds, stopped: {history.stop_reason}")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
