"""Python's cyclic garbage collector paused while a large graph is built.

Capture, channel propagation and the rewrite allocate many small objects that
all stay alive (fx nodes, their meta dicts, label arrays); every collection
walks them again, so on graphs of thousands of nodes collections cost a
growing share of the time.  :func:`gc_paused` disables the collector for the
duration of a block and restores the state it found (nested use is fine;
reference counting still frees everything without cycles).

Example:
    >>> import gc
    >>> with gc_paused():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()
    True
"""
from __future__ import annotations

import contextlib
import gc
from typing import Iterator

__all__ = ["gc_paused"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic garbage collector inside the block; re-enable it after if it was enabled."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
