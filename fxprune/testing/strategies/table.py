"""The family table: every :class:`~.core.Family` record, simplest first.

:data:`FAMILIES` (the names) is derived from it.  The order matters:
hypothesis shrinks a ``sampled_from`` towards its first element, so failing
examples shrink towards the families at the front.

Example:
    >>> FAMILIES[:4]
    ('activation', 'conv', 'linear', 'norm')
    >>> FAMILY_BY_NAME["conv"].inputs
    ('image', 'signal')
"""

from __future__ import annotations

from typing import Union

from .basic import (ACTIVATION, CONV, FLATTEN_LINEAR, LINEAR, NORM, POOL, UPSAMPLE, Activation,
                    Conv, FlattenLinear, Linear, Norm, Pool, Upsample)
from .composite import CONCAT, RESIDUAL, SPLIT, Concat, Residual, Split
from .core import Family
from .hazards import (AUTOGRAD_FN, CHANNEL_SUM, INPLACE, OWN_FORWARD, STATEFUL, TIED, TRAIN_DROPOUT,
                      WEIGHT_STD, AutogradFn, ChannelSum, Inplace, OwnForward, Stateful, Tied, TrainDropout,
                      WeightStd)
from .mixing import (ATTENTION, CHANNELS_LAST_LN, SE, SHUFFLE, Attention, ChannelShuffle,
                     ChannelsLastLN, SqueezeExcite)
from .sequence import SEQUENCE, Conv1dStack, TemporalConv, TokenMixing

__all__ = ["FAMILY_TABLE", "FAMILIES", "FAMILY_BY_NAME", "HAZARD_FAMILIES", "Block"]

#: Every op family, ordered roughly simplest first.
FAMILY_TABLE: tuple[Family, ...] = (
    ACTIVATION,
    CONV,
    LINEAR,
    NORM,
    POOL,
    FLATTEN_LINEAR,
    RESIDUAL,
    CONCAT,
    SPLIT,
    SEQUENCE,
    UPSAMPLE,
    CHANNELS_LAST_LN,
    SE,
    SHUFFLE,
    ATTENTION,
    # appended (not ordered simple-first) so that existing draws do not change
    INPLACE,
    TIED,
    STATEFUL,
    OWN_FORWARD,
    WEIGHT_STD,
    AUTOGRAD_FN,
    TRAIN_DROPOUT,
    CHANNEL_SUM,
)

#: the families that once hid verification holes (see :mod:`.hazards`)
HAZARD_FAMILIES: frozenset[str] = frozenset({"inplace", "tied", "stateful", "own_forward", "weight_std",
                                             "autograd_fn", "train_dropout", "channel_sum"})

#: The names of every op family, ordered roughly simplest first (hypothesis
#: shrinks a ``sampled_from`` towards its first element).
FAMILIES: tuple[str, ...] = tuple(family.name for family in FAMILY_TABLE)
FAMILY_BY_NAME: dict[str, Family] = {family.name: family for family in FAMILY_TABLE}

Block = Union[Conv, Linear, Norm, Activation, Residual, Concat, Split, FlattenLinear,
              ChannelShuffle, ChannelsLastLN, SqueezeExcite, Attention, TokenMixing,
              TemporalConv, Conv1dStack, Pool, Upsample, Inplace, Tied, Stateful, OwnForward, WeightStd,
              AutogradFn, TrainDropout, ChannelSum]
