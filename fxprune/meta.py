"""The ``node.meta`` keys that fxprune's passes read and write.

Passes communicate only through these keys (and through the returned
objects); no pass writes any other key.  Each key is namespaced with
``fxprune.`` so that fxprune never collides with torch.fx's own metadata.

=================  =====================================================
key                value
=================  =====================================================
``SPEC``           :class:`fxprune.analysis.capture.TensorSpec`, a tuple
                   of them for multi-output nodes, or the plain Python
                   value for non-tensor nodes (ints from ``x.size(1)``).
``CHANNELS``       the node's channel labels: one entry per output dim,
                   ``None`` for a fixed dim or an ``int64`` array of atom
                   ids (see :mod:`fxprune.analysis.channels`).
``RULE``           the :class:`fxprune.ops.registry.Rule` that handled
                   the node, or ``None`` when the node was a barrier.
``BARRIER``        a string naming why the node made its channels a
                   barrier (no rule registered, unsupported pattern).
=================  =====================================================
"""
from __future__ import annotations

__all__ = ["SPEC", "CHANNELS", "RULE", "BARRIER", "ALL_KEYS"]

SPEC = "fxprune.spec"
CHANNELS = "fxprune.channels"
RULE = "fxprune.rule"
BARRIER = "fxprune.barrier"

ALL_KEYS = (SPEC, CHANNELS, RULE, BARRIER)
