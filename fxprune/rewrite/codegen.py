"""The emitted GraphModule's code reaches its submodules through ``_modules`` (no per-call ``__getattr__``).

torch.fx writes a call of the submodule ``features.1.conv.0`` as
``getattr(getattr(self.features, "1").conv, "0")(x)``: every hop is a call of
``nn.Module.__getattr__`` (a Python function looking through ``_parameters``,
``_buffers`` and ``_modules``), four per call here, on every forward.  Eager
code does not pay this (``nn.Sequential`` iterates ``_modules``; ``self.conv``
is one hop), so on a small model the traced module is measurably slower than
the eager module of the same widths (``bench/graph_overhead.py``: about 15% on
a 2 ms MobileNet, and ``torch.fx.symbolic_trace`` of the eager module pays the
same).  :class:`ModuleDictCodeGen` writes the same call as
``self._modules['features']._modules['1']._modules['conv']._modules['0'](x)``:
dict lookups, the same objects (a ``call_module`` target is a path of
``named_modules``, so every hop is in its parent's ``_modules``).  A
``get_attr`` takes the same route to its owner and reads the last name as
before (a parameter, a buffer, a plain attribute such as the ``training`` flag).

It is used for graphs with torch.fx's plain code generator (the fx front end);
a graph with another one (``torch.export``'s pytree handling) keeps its own.
The generator travels with the graph: ``recompile()`` and ``copy.deepcopy``
keep the fast code (a pickled module is re-traced on loading and comes back
with fx's own code: the same results, the old per-call cost).

Example:
    >>> import torch, torch.fx as fx
    >>> m = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    >>> gm = fx.symbolic_trace(m)
    >>> gm.graph.set_codegen(ModuleDictCodeGen()); _ = gm.recompile()
    >>> "self._modules['0']._modules['0'](input_1)" in gm.code
    True
"""
from __future__ import annotations

from typing import Any

import torch.fx as fx
from torch.fx.graph import CodeGen, PythonCode

__all__ = ["ModuleDictCodeGen", "use_module_dict_codegen"]

try:  # private: the exact text torch.fx writes for an attribute path
    from torch.fx.graph import _format_target
except ImportError:  # pragma: no cover - a torch without it keeps fx's own code
    _format_target = None


def _hops(base: str, path: list[str]) -> str:
    return base + "".join(f"._modules[{p!r}]" for p in path)


def _last(base: str, name: str) -> str:
    return f"{base}.{name}" if name.isidentifier() else f"getattr({base}, {name!r})"


class ModuleDictCodeGen(CodeGen):
    """torch.fx's code generator, with submodules reached through ``_modules`` (see the module docstring)."""

    def _gen_python_code(self, nodes: Any, root_module: str, namespace: Any, **kwargs: Any) -> PythonCode:
        code = super()._gen_python_code(nodes, root_module, namespace, **kwargs)
        if _format_target is None:
            return code
        lines = code.src.split("\n")
        first: dict[str, int] = {}      # the line assigning each name: "    name = ..." or "    name : T = ..."
        for i, line in enumerate(lines):
            if line.startswith("    ") and not line.startswith("     "):
                name, _, rest = line[4:].partition(" ")
                if rest.startswith(("= ", ": ")):
                    first.setdefault(name, i)
        for node in nodes:
            if node.op not in ("call_module", "get_attr") or not isinstance(node.target, str) \
                    or node.name not in first:
                continue
            path = node.target.split(".")
            old = f" = {_format_target(root_module, node.target)}"
            if node.op == "call_module":
                old, new = old + "(", f" = {_hops(root_module, path)}("
            elif len(path) > 1:
                new = f" = {_last(_hops(root_module, path[:-1]), path[-1])}"
            else:
                continue
            i = first[node.name]
            at = lines[i].find(old)
            end = at + len(old)
            if at < 0 or " = " in lines[i][:at] or (node.op == "get_attr" and lines[i][end:end + 1] not in ("", ";")):
                continue   # not the text expected: fx's own code stays
            lines[i] = lines[i][:at] + new + lines[i][end:]
        code.src = "\n".join(lines)
        return code


def use_module_dict_codegen(graph: fx.Graph) -> fx.Graph:
    """Give ``graph`` :class:`ModuleDictCodeGen` if it has torch.fx's plain generator.

    Set it before the GraphModule is built (its code is generated then), or recompile after.
    """
    if type(graph._codegen) is CodeGen:
        graph.set_codegen(ModuleDictCodeGen())
    return graph
