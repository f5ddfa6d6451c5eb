"""Op knowledge: the rule registry and the built-in rules.

Every rule is declared once, in its family module, with every key it is
registered under (see :mod:`fxprune.ops.registry`); :mod:`fxprune.ops.builtin`
collects them.  ``fxprune.ops`` imports only the floor (:mod:`fxprune.ir`,
:mod:`fxprune.errors`, :mod:`fxprune.modules`).

Example:
    >>> import torch, fxprune.ops as ops
    >>> ops.default_registry().rule_for_key(torch.nn.functional.gelu) is ops.UNARY
    True
"""
from .attention import MULTIHEAD_ATTENTION
from .concat import CAT, CHUNK, SPLIT, SPLIT_ATEN, STACK, UNBIND
from .context import EmitContext, OpContext, Unsupported, Value, first_tensor
from .conv import CONV_FUNCTION, CONV_MODULE, CONV_TRANSPOSE_FUNCTION, CONV_TRANSPOSE_MODULE
from .elementwise import (ELEMENTWISE, ELEMENTWISE_ADD, ELEMENTWISE_DIV, ELEMENTWISE_MUL, ELEMENTWISE_RDIV,
                          ELEMENTWISE_SUB, LIKE, NEW_TENSOR, PRELU_FUNCTION, PRELU_MODULE, STOCHASTIC_DEPTH, UNARY,
                          WHERE)
from .embedding import EMBEDDING_ATEN, EMBEDDING_FUNCTION, EMBEDDING_MODULE
from .implant import IMPLANTED_CONV_MODULE, IMPLANTED_LINEAR_MODULE
from .indexing import ATTRIBUTE, GATHER, GETITEM, GUARDS, INDEX, METADATA, NARROW, SELECT, SLICE, TRACED_GUARDS
from .layout import (EXPAND, EXPAND_AS, MATRIX_T, PERMUTE, REPEAT, RESHAPE, ROLL, TRANSPOSE, UNFLATTEN,
                     UNFLATTEN_MODULE, VIEW)
from .linear import LINEAR_FUNCTION, LINEAR_MODULE
from .matmul import ADD_MATMUL, EINSUM, MATMUL, SDPA
from .norm import (BATCH_NORM_ATEN, BATCH_NORM_FUNCTION, BATCH_NORM_MODULE, GROUP_NORM_FUNCTION,
                   GROUP_NORM_MODULE, INSTANCE_NORM_ATEN, INSTANCE_NORM_MODULE, LAYER_NORM_FUNCTION, LAYER_NORM_MODULE,
                   NORMALIZE, RMS_NORM_FUNCTION, RMS_NORM_MODULE)
from .reduce import LOGSUMEXP, NORM_REDUCE, REDUCE_MIXING, REDUCE_SUM, REDUCE_TUPLE, SOFTMAX, SOFTMAX_MODULE
from .builtin import default_registry
from .registry import (Implant, Keys, Match, Method, Registry, Rule, describe_key, node_key, writes_in_training,
                       writes_nothing)
from .recurrent import RECURRENT_MODULE
from .spatial import PAD, SPATIAL

__all__ = [
    "ADD_MATMUL", "ATTRIBUTE", "BATCH_NORM_ATEN", "BATCH_NORM_FUNCTION", "BATCH_NORM_MODULE", "CAT", "CHUNK",
    "CONV_FUNCTION", "CONV_MODULE", "CONV_TRANSPOSE_FUNCTION", "CONV_TRANSPOSE_MODULE", "ELEMENTWISE",
    "ELEMENTWISE_ADD", "EINSUM", "ELEMENTWISE_DIV", "ELEMENTWISE_MUL", "ELEMENTWISE_RDIV", "ELEMENTWISE_SUB", "EMBEDDING_ATEN", "EMBEDDING_FUNCTION", "EMBEDDING_MODULE",
    "EXPAND", "EXPAND_AS", "EmitContext", "GATHER", "GETITEM", "GROUP_NORM_FUNCTION", "GROUP_NORM_MODULE", "GUARDS",
    "IMPLANTED_CONV_MODULE", "INDEX", "IMPLANTED_LINEAR_MODULE", "Implant", "INSTANCE_NORM_ATEN", "INSTANCE_NORM_MODULE", "Keys", "LAYER_NORM_FUNCTION", "LAYER_NORM_MODULE",
    "LIKE", "LINEAR_FUNCTION", "LOGSUMEXP", "LINEAR_MODULE", "MATMUL", "MATRIX_T", "METADATA", "MULTIHEAD_ATTENTION", "Match", "Method",
    "NARROW", "NEW_TENSOR", "NORMALIZE", "NORM_REDUCE", "OpContext", "PAD", "PERMUTE", "PRELU_FUNCTION", "PRELU_MODULE", "REDUCE_MIXING", "REDUCE_SUM",
    "RECURRENT_MODULE", "REDUCE_TUPLE", "REPEAT", "RESHAPE", "RMS_NORM_FUNCTION", "RMS_NORM_MODULE", "ROLL", "Registry", "Rule",
    "SDPA", "SELECT", "SLICE", "SOFTMAX", "SOFTMAX_MODULE", "SPATIAL", "SPLIT", "SPLIT_ATEN", "STACK", "STOCHASTIC_DEPTH", "TRACED_GUARDS",
    "TRANSPOSE", "UNARY", "UNBIND", "UNFLATTEN", "UNFLATTEN_MODULE", "Unsupported", "VIEW", "Value", "WHERE",
    "default_registry", "describe_key", "first_tensor", "node_key", "writes_in_training", "writes_nothing",
]
