"""Schedule drivers: iterative (ILP/IAP), adaptive (AIAP), one-shot (HAP) and 3D pruning.

Every schedule works on any model :func:`fxprune.analyze` accepts, calls
user callbacks to fine-tune (``finetune(gm) -> gm``) and to measure
(``evaluate(gm) -> accuracy in percent``), and returns a :class:`History` of
every finished round (round 0 is the unpruned baseline):
``history.rounds[i].graph_module``, ``history.rounds[i].metrics``,
``history.best`` (the result) and ``history.graph_module`` (its model).

With ``checkpoint_dir`` each finished round is saved atomically and a second
call with the same directory resumes after the last finished round.  A
``KeyboardInterrupt`` propagates as :class:`ScheduleInterrupted` (a
``KeyboardInterrupt`` subclass) whose ``history`` holds the finished rounds.
Each schedule is a small :class:`Policy` over one round loop
(:mod:`fxprune.schedules.engine`) with a settings dataclass derived from
:class:`ScheduleConfig`; write your own the same way.  See
``docs/schedules.md``.

Example:
    >>> import torch, torch.nn as nn
    >>> from fxprune.schedules import iterative
    >>> torch.manual_seed(0) and None
    >>> model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    >>> evaluate = lambda gm: 90.0 if gm.get_submodule("0").out_features >= 16 else 80.0
    >>> history = iterative(model, (torch.randn(2, 8),), evaluate=evaluate, rounds=10, progress=False)
    >>> history.stop_reason, history.graph_module.get_submodule("0").out_features
    ('tolerance', 17)
"""
from types import MappingProxyType

from .adaptive import TARGETS, Adaptive, AdaptiveConfig, adaptive
from .config import ScheduleConfig
from .engine import Decision, Policy, Runtime
from .history import History, RoundRecord, ScheduleInterrupted
from .iterative import Iterative, IterativeConfig, iterative
from .one_shot import OneShot, OneShotConfig, one_shot
from .three_d import ThreeD, ThreeDConfig, three_d

__all__ = [
    "POLICIES",
    "SCHEDULES",
    "TARGETS",
    "Adaptive",
    "AdaptiveConfig",
    "Decision",
    "History",
    "Iterative",
    "IterativeConfig",
    "OneShot",
    "OneShotConfig",
    "Policy",
    "RoundRecord",
    "Runtime",
    "ScheduleConfig",
    "ScheduleInterrupted",
    "ThreeD",
    "ThreeDConfig",
    "adaptive",
    "iterative",
    "one_shot",
    "three_d",
]

#: schedule name -> (driver function, its configuration class)
SCHEDULES = MappingProxyType({
    "iterative": (iterative, IterativeConfig),
    "adaptive": (adaptive, AdaptiveConfig),
    "one_shot": (one_shot, OneShotConfig),
    "three_d": (three_d, ThreeDConfig),
})

#: schedule name -> its policy class
POLICIES = MappingProxyType({p.name: p for p in (Iterative, Adaptive, OneShot, ThreeD)})
