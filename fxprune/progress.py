"""Progress display: a tqdm bar if tqdm is importable, else plain text on stderr.

One :class:`Progress` serves both uses in fxprune:

* iterating with a bar (calibration batches): :func:`progress` wraps an
  iterable in a *transient* display (tqdm with ``leave=False``; without tqdm
  one stderr line rewritten in place, ``desc: k/total``);
* per-step updates with a postfix (schedule rounds): a *persistent* display
  (tqdm with ``leave=True``; without tqdm one stderr line per update,
  ``[fxprune desc] unit k/total key=value ...``), plus :meth:`Progress.message`
  lines.

Nothing is shown when ``enabled`` is false, or on ranks other than 0 of an
initialised ``torch.distributed`` run.

Example:
    >>> import sys
    >>> from fxprune.progress import Progress, progress
    >>> list(progress(range(3), total=3, desc="calib", enabled=False))
    [0, 1, 2]
    >>> bar = Progress("demo", total=2, unit="round", enabled=False)   # silent
    >>> bar.update(1, postfix={"acc": "90.00"}); bar.close()
"""
from __future__ import annotations

import sys
from typing import Any, Iterable, Iterator, Mapping

import torch

__all__ = ["Progress", "progress"]


def _active(enabled: bool) -> bool:
    """Whether a display asked for with ``enabled`` is shown (only rank 0 of a distributed run shows one)."""
    if not enabled:
        return False
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


class Progress:
    """A progress display over ``total`` steps (see the module docstring).

    Args:
        desc: what is counted (``"iterative"``, ``"activation scores"``).
        total: the number of steps, if known.
        enabled: show anything at all (see the module docstring).
        initial: steps already done (a resumed run).
        unit: the step's name (``"round"``).
        transient: the display goes away when closed (a bar over batches)
            rather than staying in the log (a bar over rounds).
    """

    def __init__(self, desc: str, total: int | None = None, *, enabled: bool = True, initial: int = 0,
                 unit: str = "it", transient: bool = False) -> None:
        self.desc, self.total, self.unit, self.transient = desc, total, unit, transient
        self.enabled = _active(enabled)
        self.count = initial if total is None else min(initial, total)
        self._bar: Any = None
        self._open_line = False
        if not self.enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        self._bar = tqdm(total=total, initial=self.count, desc=desc, unit=unit, file=sys.stderr,
                         leave=not transient, dynamic_ncols=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1, postfix: Mapping[str, Any] | None = None) -> None:
        """Advance by ``n`` steps (0: only show ``postfix``) and show ``postfix``, if any."""
        if not self.enabled:
            return
        self.count += n
        if self._bar is not None:
            if n:
                self._bar.update(n)
            if postfix:
                self._bar.set_postfix(dict(postfix), refresh=True)
            return
        of = f"/{self.total}" if self.total else ""
        tail = "".join(f" {k}={v}" for k, v in (postfix or {}).items())
        if self.transient:
            self._write(f"\r{self.desc}: {self.count}{of}{tail}", newline=False)
        else:
            self._write(f"[fxprune {self.desc}] {self.unit} {self.count}{of}{tail}")

    def message(self, text: str) -> None:
        """A line of text that stays (written above a tqdm bar)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(f"[fxprune {self.desc}] {text}", file=sys.stderr)
        else:
            self._write(f"[fxprune {self.desc}] {text}")

    def close(self) -> None:
        """End the display (a transient stderr line gets its newline)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._open_line:
            self._write("")

    def _write(self, text: str, newline: bool = True) -> None:
        if newline and self._open_line and text:
            text = "\n" + text
        sys.stderr.write(text + ("\n" if newline else ""))
        sys.stderr.flush()
        self._open_line = not newline


def progress(iterable: Iterable[Any], *, total: int | None = None, desc: str = "calibration",
             enabled: bool = True) -> Iterable[Any]:
    """``iterable`` with a transient progress display (``iterable`` itself when none is shown)."""
    if not _active(enabled):
        return iterable
    return _iterate(iterable, Progress(desc, total, transient=True))


def _iterate(iterable: Iterable[Any], bar: Progress) -> Iterator[Any]:
    with bar:
        for item in iterable:
            yield item
            bar.update()
