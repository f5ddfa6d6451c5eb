"""Train/eval mode in exported graphs: the flags that follow the mode, the branches that cannot.

``torch.export`` bakes ``self.training`` into constants.  :func:`follow_mode`
makes the ``train``/``training`` arguments that came from ``torch.nn`` modules
read the emitted module's flag at run time and reports the others;
:func:`mode_differences` captures the model a second time in the other mode
and reports where the two graphs differ outside ``torch.nn`` modules (Python
branches on ``self.training`` leave no other trace).

Example:
    >>> import torch
    >>> mode_argument(torch.ops.aten.dropout.default), mode_argument(torch.ops.aten.relu.default)
    (2, None)
"""
from __future__ import annotations

import difflib
from typing import Any, Sequence

import torch
import torch.fx as fx

from .tracer import CAPTURE_LOCK, tracing_copy

__all__ = ["follow_mode", "mode_argument", "mode_differences", "mode_signature"]


def mode_argument(target: Any) -> int | None:
    """The index of an ATen overload's ``train``/``training`` bool argument, if it has one."""
    schema = getattr(target, "_schema", None)
    for i, arg in enumerate(schema.arguments if schema is not None else ()):
        if arg.name in ("train", "training") and str(arg.type) == "bool":
            return i
    return None


def follow_mode(gm: fx.GraphModule, model: torch.nn.Module) -> tuple[str, ...]:
    """Exported ``train`` arguments of ``torch.nn`` modules read the flag at run time; others are reported."""
    modules = dict(model.named_modules())
    flag = None
    frozen: list[str] = []
    for node in list(gm.graph.nodes):
        i = mode_argument(node.target) if node.op == "call_function" else None
        if i is None or i >= len(node.args) or not isinstance(node.args[i], bool):
            continue
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        owner_name = str(stack[-1][0]) if stack else ""
        owner = modules.get(owner_name)
        if owner is None or node.args[i] != owner.training:
            continue  # a literal that differs from the mode: keep it
        if type(owner).__module__.startswith("torch.nn."):
            if flag is None:
                with gm.graph.inserting_before(next(n for n in gm.graph.nodes if n.op != "placeholder")):
                    flag = gm.graph.get_attr("training")
            node.update_arg(i, flag)
        else:
            frozen.append(f"node '{node.name}' ({node.target}) in {type(owner).__qualname__} "
                          f"'{owner_name}': {node.args[i]} (self.training or a literal)")
    if flag is not None:
        gm.recompile()
    return tuple(frozen)


def mode_signature(gm: fx.GraphModule) -> list[tuple[str, str]]:
    """``(node name, op and constant arguments)`` of every ATen call outside ``torch.nn`` modules.

    ``train``/``training`` arguments read as one token (:func:`follow_mode`
    handles them); tensor arguments as ``%``.  Calls made by ``torch.nn``
    modules are left out: their train-mode differences (BatchNorm counting
    batches) are their own, followed through their ``training`` flag.
    """
    out = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        owner = stack[-1][1] if stack else None
        owner_module = owner if isinstance(owner, str) else getattr(owner, "__module__", "")
        if str(owner_module).startswith("torch.nn."):
            continue
        mode_i = mode_argument(node.target)
        args = ["MODE" if i == mode_i else "%" if isinstance(a, fx.Node) else repr(a)
                for i, a in enumerate(node.args)]
        kwargs = [f"{k}={'%' if isinstance(v, fx.Node) else repr(v)}" for k, v in sorted(node.kwargs.items())]
        out.append((node.name, f"{node.target}({', '.join(args + kwargs)})"))
    return out


def mode_differences(gm: fx.GraphModule, model: torch.nn.Module, example_inputs: Sequence[Any],
                      dims: Any = None) -> tuple[str, ...]:
    """Where ``model`` exported in the other mode gives another graph (outside ``torch.nn`` modules).

    ``example_inputs`` and ``dims`` (``dynamic_shapes``) are those ``gm`` was
    captured with, so symbolic sizes compare with symbolic sizes.

    Empty when the graphs agree, or when the model cannot be captured in the
    other mode at all (BatchNorm on one value per channel in train mode): then
    the emitted module is not run in that mode either.
    """
    try:
        with CAPTURE_LOCK:
            other = tracing_copy(model)
            if other is None:
                return ()
            other.train(not model.training)
            flipped = torch.export.export(other, tuple(example_inputs), dynamic_shapes=dims).module()
    except Exception:  # noqa: BLE001 - it does not run in that mode: nothing to compare
        return ()
    mine, theirs = mode_signature(gm), mode_signature(flipped)
    if [sig for _, sig in mine] == [sig for _, sig in theirs]:
        return ()
    matcher = difflib.SequenceMatcher(a=[sig for _, sig in mine], b=[sig for _, sig in theirs], autojunk=False)
    found = []
    other_mode = "eval" if model.training else "train"
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if i1 < i2:
            there = f"is {theirs[j1][1]}" if j1 < j2 else "is absent"
            found.append(f"node '{mine[i1][0]}' ({mine[i1][1]}) {there} in {other_mode} mode "
                         "(a Python branch on self.training)")
        else:
            where = f"before node '{mine[i1][0]}'" if i1 < len(mine) else "at the end"
            found.append(f"{other_mode} mode adds {theirs[j1][1]} {where} (a Python branch on self.training)")
    return tuple(found)
