"""Saving without pickles: pruned results (``fxprune.save`` / ``fxprune.load``) and the pieces
schedule checkpoints share with them.

* :mod:`.files`: atomic writes, checksummed JSON and ``torch.load(weights_only=True)`` tensor files;
* :mod:`.fingerprint`: a module's code, module tree, tensor shapes, dtypes and values as data;
* :mod:`.options`: analysis options and example inputs as JSON plus named tensors;
* :mod:`.result`: :func:`save` and :func:`load` of a :class:`~fxprune.api.PruneResult`.

Nothing read from a file is executed: a missing, corrupt, altered or foreign
file raises :class:`~fxprune.errors.LoadError` naming it, and a model that
differs from the saved one raises :class:`~fxprune.errors.ConfigError`
saying how.  See ``docs/user_guide.md`` (Saving and loading).
"""
from .fingerprint import Fingerprint
from .result import load, save

__all__ = ["Fingerprint", "load", "save"]
