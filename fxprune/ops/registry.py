"""The op registry: all of fxprune's knowledge about ops, declared as data.

A :class:`Rule` says, for one op family:

* ``propagate`` -- how channel labels map from inputs (and parameters) to
  outputs, like a JAX batching rule.  It receives an
  :class:`~fxprune.ops.context.OpContext` whose tensor arguments carry
  per-dimension labels, and returns the output's labels.  It declares where
  channels sit in parameters by unifying a parameter's dimension labels with a
  tensor's and tagging the :class:`~fxprune.ir.Role`.
* ``emit`` -- for ``call_function``/``call_method`` nodes, how to rewrite the
  node's constant arguments once channels are removed (view sizes, split sizes,
  slice bounds).  ``None`` means the arguments never change.
* ``resize`` -- for ``call_module`` nodes, which module attributes follow the
  new sizes (``in_channels``, ``num_features``...).  Parameters are sliced
  generically from their labels; no rule slices tensors itself.
* ``macs`` -- multiply-accumulates of one call, from shapes, for the report.
* ``zeros`` -- what the op does to removed channels that hold zeros
  (:class:`~fxprune.ir.Zeros`: ``KEEP``, ``PROBE`` or ``LOSE``, the default).
* ``algebra`` -- optional: what the op computes, for passes that reason about
  values (:class:`~fxprune.ir.Algebra`: products, quotients, size reads...).
* ``writes_state`` -- optional, for module keys: whether a call of this module,
  as it is configured, may write its own parameters, buffers or attributes
  (:func:`writes_nothing`, :func:`writes_in_training`; ``None``, the default:
  unknown, so it may).  What it writes in place of its *input*
  (``inplace=True``) is :func:`~fxprune.ops.effects.mutated_args`' business.
* ``implant`` -- optional: how a module of this family is replaced by HAP's
  Neural Implant (:class:`Implant`).
* ``keys`` -- every registry key the rule is registered under, named at once
  in one :class:`Keys` record: torch functions, ``torch.nn.functional``
  functions, Tensor methods, ``operator`` functions, module types and ATen
  overload packets (the ``torch.export`` front end).  Names are resolved when
  the rule is built, so a misspelt name fails at import; a name ending in
  ``?`` is optional (absent from some torch versions).

The built-in rules live next to their registration in the family modules of
:mod:`fxprune.ops` (``elementwise``, ``reduce``, ``layout``, ``indexing``,
``concat``, ``matmul``, ``attention``, ``spatial``, ``conv``, ``linear``, ``norm``,
``embedding``, ``implant``); :mod:`fxprune.ops.builtin` collects them into
one immutable table and rejects a key claimed by two rules.

A node whose key has no rule is a *barrier*: its channels are fixed and the
report names it.  Module types are looked up along the MRO only while no class
on the way overrides ``forward`` (or a ``*_forward`` helper): a subclass with
its own forward never inherits its base class's rule.
:func:`default_registry` returns a fresh, extendable :class:`Registry`, so
there is no global state.

Example -- registering a rule for a custom activation module:
    >>> import torch.nn as nn
    >>> from fxprune.ops import Keys, UNARY, default_registry
    >>> class MyAct(nn.Module):
    ...     def forward(self, x):
    ...         return x.clamp(min=0)
    >>> reg = default_registry()
    >>> reg.register(UNARY.with_keys(Keys(modules=(MyAct,))))
    >>> reg.rule_for_key(MyAct).family
    'unary'
    >>> class StdConv(nn.Conv2d):            # its own forward: no inherited rule
    ...     def forward(self, x):
    ...         return super().forward(x - x.mean())
    >>> reg.rule_for_key(StdConv) is None, reg.rule_for_key(nn.Conv2d).family
    (True, 'conv')
"""
from __future__ import annotations

import builtins
import dataclasses
import functools
import operator
import types
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ..errors import RegistrationError
from ..ir import Algebra, AutogradFunction, Zeros
from ..modules import submodule

if TYPE_CHECKING:  # pragma: no cover
    from .context import EmitContext, OpContext

__all__ = [
    "Implant",
    "Keys",
    "Match",
    "Method",
    "Registry",
    "Rule",
    "describe_key",
    "frozen_table",
    "node_key",
    "writes_in_training",
    "writes_nothing",
]


@dataclass(frozen=True)
class Method:
    """Registry key for ``call_method`` nodes, e.g. ``Method("view")``."""

    name: str


_NAMESPACES: dict[str, Any] = {
    "torch": torch,
    "functional": F,
    "operators": operator,
    "builtins": builtins,
    "modules": nn,
}


def _resolve_attr(space: str, name: str) -> Any:
    optional = name.endswith("?")
    name = name.rstrip("?")
    if space == "methods":
        if hasattr(torch.Tensor, name):
            return Method(name)
    elif space == "aten":
        packet = getattr(torch.ops.aten, name, None) if hasattr(torch.ops.aten, name) else None
        if packet is not None:
            return packet
    else:
        obj = getattr(_NAMESPACES[space], name, None)
        if obj is not None:
            return obj
    if optional:
        return None
    where = {"methods": "torch.Tensor", "aten": "torch.ops.aten", "functional": "torch.nn.functional",
             "modules": "torch.nn", "operators": "operator"}.get(space, space)
    raise RegistrationError(f"{where} has no attribute {name!r} (mark it optional with a trailing '?' if "
                    f"it exists only in some torch versions)")


@dataclass(frozen=True)
class Keys:
    """Every key of one rule, named at once (resolved when built; see the module docstring).

    Attributes:
        torch: names in ``torch`` (``"relu"`` for ``torch.relu``).
        functional: names in ``torch.nn.functional``.
        methods: Tensor method names (``"view"`` for ``x.view(...)``).
        operators: names in :mod:`operator` (``"add"`` for ``a + b``).
        builtins: names in :mod:`builtins` (``"getattr"``, ``"len"``).
        modules: module classes, or names in ``torch.nn``.
        aten: ATen overload packets, by name in ``torch.ops.aten``.
        functions: any other callables (your own functions).
    """

    torch: tuple[str, ...] = ()
    functional: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    operators: tuple[str, ...] = ()
    builtins: tuple[str, ...] = ()
    modules: tuple[type | str, ...] = ()
    aten: tuple[str, ...] = ()
    functions: tuple[Callable[..., Any], ...] = ()
    resolved: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        out: list[Any] = []
        for space in ("torch", "functional", "methods", "operators", "builtins", "aten"):
            names = getattr(self, space)
            if isinstance(names, str):
                raise RegistrationError(f"Keys({space}=...) takes a tuple of names, got the string {names!r}")
            out.extend(_resolve_attr(space, n) for n in names)
        for m in self.modules:
            out.append(_resolve_attr("modules", m) if isinstance(m, str) else m)
        out.extend(self.functions)
        resolved = tuple(dict.fromkeys(k for k in out if k is not None))
        bad = [k for k in resolved if isinstance(k, type) and not issubclass(k, nn.Module)]
        if bad:
            raise RegistrationError(f"Keys(modules=...) takes nn.Module classes, got {bad}")
        object.__setattr__(self, "resolved", resolved)

    def __iter__(self):
        return iter(self.resolved)

    def __len__(self) -> int:
        return len(self.resolved)


@dataclass(frozen=True)
class Implant:
    """A module rule's capability to take HAP's Neural Implant (see :mod:`fxprune.rewrite.implant`).

    Attributes:
        accepts: ``accepts(module) -> bool``: whether this module can be implanted.
        build: ``build(module, kept_pos, implant_pos, kind, rank) -> nn.Module``: the
            implanted replacement, producing every original output channel.
    """

    accepts: Callable[[torch.nn.Module], bool]
    build: Callable[..., torch.nn.Module]


@dataclass(frozen=True)
class Rule:
    """One op family's channel behaviour (see the module docstring)."""

    family: str
    propagate: Callable[["OpContext"], Any]
    emit: Callable[["EmitContext"], tuple[Any, tuple, dict]] | None = None
    resize: Callable[[torch.nn.Module, "EmitContext"], None] | None = None
    macs: Callable[["OpContext"], int] | None = None
    doc: str = ""
    leaf: bool = False  # a rule covering the whole module or function: tracing does not enter it
    keys: Keys = field(default_factory=Keys)
    implant: Implant | None = None
    zeros: Zeros = Zeros.LOSE  # what removed channels that hold zeros become (see fxprune.ir.Zeros)
    algebra: Algebra = Algebra.NONE  # what it computes, for value-level passes (see fxprune.ir.Algebra)
    writes_state: Callable[[torch.nn.Module], bool] | None = None  # may a module call write its own state? None: unknown

    def with_keys(self, keys: Keys) -> "Rule":
        """The same rule registered under other keys (for your own ops)."""
        return dataclasses.replace(self, keys=keys)


def writes_nothing(module: torch.nn.Module) -> bool:
    """A :attr:`Rule.writes_state` for modules that never write their state or attributes (a convolution)."""
    return False


def writes_in_training(module: torch.nn.Module) -> bool:
    """A :attr:`Rule.writes_state` for modules that write their buffers in training mode only (a BatchNorm's
    running statistics and counter)."""
    return module.training


@dataclass(frozen=True)
class Match:
    """A registry hit: the key that matched and its rule."""

    key: Any
    rule: Rule


def node_key(node: fx.Node, root: torch.nn.Module, module: torch.nn.Module | None = None) -> Any:
    """The registry key of an fx node (function, :class:`Method`, module type or ATen overload).

    ``module``: the module a ``call_module`` node calls, where the caller has looked it up already.
    """
    if node.op == "call_function":
        return node.target
    if node.op == "call_method":
        return Method(str(node.target))
    if node.op == "call_module":
        module = module if module is not None else submodule(root, str(node.target))
        return module.function.apply if isinstance(module, AutogradFunction) else type(module)
    return None


def _overrides_forward(cls: type, base: type) -> bool:
    """Whether a class between ``cls`` and ``base`` in the MRO defines its own forward."""
    for klass in cls.__mro__:
        if klass is base:
            return False
        if any(name == "forward" or name.endswith("_forward") for name in vars(klass)):
            return True
    return False


#: ``id(table) -> (table, (leaf types, function keys) or None until asked)`` of the tables :func:`frozen_table` made
_CAPTURE_KEYS: dict[int, tuple[Mapping[Any, Rule], tuple[tuple[Any, ...], tuple[Any, ...]] | None]] = {}


def frozen_table(rules: Mapping[Any, Rule]) -> MappingProxyType:
    """A read-only table over a private copy of ``rules`` (the built-in table): nothing can change it,
    so what a registry without rules of its own derives from it for capture is computed once.

    Example:
        >>> t = frozen_table({})
        >>> Registry(t).leaf_types() is Registry(t).leaf_types()
        True
    """
    table = MappingProxyType(dict(rules))
    _CAPTURE_KEYS[id(table)] = (table, None)  # the table kept alive: its id stays its own
    return table


class Registry:
    """A mutable table of rules layered over an immutable base table."""

    def __init__(self, base: Mapping[Any, Rule] | None = None) -> None:
        self._base: Mapping[Any, Rule] = base if base is not None else MappingProxyType({})
        self._own: dict[Any, Rule] = {}

    def register(self, *keys: Any, rule: Rule | None = None) -> None:
        """Register a rule: ``register(rule)`` under ``rule.keys``, or ``register(*keys, rule=rule)``.

        A key given explicitly may be a function, a :class:`Method`, a module
        type or an ATen overload (packet); later registrations override earlier
        ones and the built-in table.
        """
        if rule is None and len(keys) == 1 and isinstance(keys[0], Rule):
            rule, keys = keys[0], tuple(keys[0].keys)
        if not isinstance(rule, Rule):
            raise TypeError(f"rule must be an fxprune Rule, got {type(rule).__name__}")
        if not keys:
            raise TypeError("register() needs keys: pass them, or a Rule whose keys= names them")
        for key in keys:
            self._own[key] = rule

    def copy(self) -> "Registry":
        new = Registry(self._base)
        new._own = dict(self._own)
        return new

    def keys(self) -> list[Any]:
        return list({**self._base, **self._own}.keys())

    def items(self) -> list[tuple[Any, Rule]]:
        return list({**self._base, **self._own}.items())

    def leaf_types(self) -> tuple[Any, ...]:
        """Module types and Python functions whose rule covers the whole call (kept as leaves when tracing).

        A leaf function is recorded as one call wherever traced code calls it by
        a global name (``torch.fx`` autowrapping): a stochastic-depth helper
        ``drop_path(x, p, self.training)`` then follows the emitted module's mode.
        """
        return self._capture_keys()[0]

    def function_keys(self) -> tuple[Any, ...]:
        """The plain Python functions with a rule (capture keeps them as calls), in :meth:`items` order."""
        return self._capture_keys()[1]

    def _capture_keys(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """``(leaf_types(), function_keys())``; for a registry without rules of its own over a
        :func:`frozen_table`, computed once per table instead of from a merged copy at every capture."""
        frozen = _CAPTURE_KEYS.get(id(self._base)) if not self._own else None
        if frozen is not None and frozen[0] is self._base and frozen[1] is not None:
            return frozen[1]
        items = self.items()
        keys = (tuple(k for k, r in items if r.leaf and (isinstance(k, type) or isinstance(k, types.FunctionType))),
                tuple(k for k, _ in items if isinstance(k, types.FunctionType)))
        if frozen is not None and frozen[0] is self._base:
            _CAPTURE_KEYS[id(self._base)] = (self._base, keys)
        return keys

    def _get(self, key: Any) -> Rule | None:
        try:
            if key in self._own:
                return self._own[key]
            return self._base.get(key)
        except TypeError:  # an unhashable target
            return None

    def match(self, key: Any) -> Match | None:
        """The registered key and rule for ``key`` (MRO for module types, packet for ATen overloads)."""
        rule = self._get(key)
        if rule is not None:
            return Match(key, rule)
        if isinstance(key, type):
            for base in key.__mro__[1:]:
                rule = self._get(base)
                if rule is not None:
                    return None if _overrides_forward(key, base) else Match(base, rule)
            return None
        packet = getattr(key, "overloadpacket", None)
        if packet is not None:
            rule = self._get(packet)
            return None if rule is None else Match(packet, rule)
        return None

    def rule_for_key(self, key: Any) -> Rule | None:
        hit = self.match(key)
        return None if hit is None else hit.rule

    def lookup(self, node: fx.Node, root: torch.nn.Module) -> Rule | None:
        """The rule for ``node``, or ``None`` (the node is then a barrier)."""
        return self.rule_for_key(node_key(node, root))


@functools.lru_cache(maxsize=1)
def _public_names() -> dict[int, str]:
    """``id(object) -> qualified name`` for the public callables of torch, F, operator and builtins."""
    names: dict[int, str] = {}
    for prefix, space in (("builtins.", builtins), ("operator.", operator), ("torch.", torch),
                          ("torch.nn.functional.", F)):
        for name, obj in vars(space).items():
            if not name.startswith("_") and callable(obj):
                names.setdefault(id(obj), prefix + name)
    return names


def describe_key(key: Any) -> str:
    """A readable, valid-Python name for a registry key (for error messages).

    Example:
        >>> import torch
        >>> describe_key(torch.relu), describe_key(Method("view")), describe_key(torch.ops.aten.relu.default)
        ('torch.relu', 'torch.Tensor.view', 'torch.ops.aten.relu')
    """
    if isinstance(key, Method):
        return f"torch.Tensor.{key.name}"
    if isinstance(key, type):
        return f"{key.__module__}.{key.__qualname__}"
    if isinstance(key, (torch._ops.OpOverloadPacket, torch._ops.OpOverload)):
        packet = getattr(key, "overloadpacket", key)
        ns, _, name = packet._qualified_op_name.partition("::")
        return f"torch.ops.{ns}.{name}"
    owner = getattr(key, "__self__", None)
    if isinstance(owner, type):  # Fn.apply of a custom autograd Function
        return f"{owner.__module__}.{owner.__qualname__}.{key.__name__}"
    known = _public_names().get(id(key))
    if known is not None:
        return known.removeprefix("builtins.")
    name = getattr(key, "__qualname__", None) or getattr(key, "__name__", None) or str(key)
    mod = getattr(key, "__module__", None)
    return f"{mod}.{name}" if mod else str(name)
