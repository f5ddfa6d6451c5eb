"""The capture's shortcuts past torch.fx's generic machinery give torch.fx's own results (issue 14, speed).

fxprune's tracer (:mod:`fxprune.analysis.tracing_shortcuts`) lowers common arguments without
torch.fx's dozen checks, copies the module stack of each node directly and quotes
the user's source line without summarising the whole stack; each shortcut is
compared here with the torch.fx (or ``traceback``) path it stands for.
"""
from __future__ import annotations

import collections
import sys
import traceback

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from fxprune.analysis import tracer as tracer_module, tracing_shortcuts, values
from fxprune.analysis.tracer import _Tracer, trace_module
from test_fx_values import keywords_only  # the Hugging Face style decorator


def _tracers(make_root) -> tuple[_Tracer, _Tracer]:
    """Two tracers, each on its own ``make_root()`` with a graph: with the shortcuts, and with every
    argument through torch.fx."""
    pair = []
    for handlers in (None, {}):
        root = make_root()
        tracer = _Tracer((), frozenset(), (), [])
        if handlers is not None:
            tracer._arg_handlers = handlers
        tracer.root = root
        tracer.graph = fx.Graph(tracer_cls=_Tracer)
        tracer.tensor_attrs = {}
        pair.append(tracer)
    return pair[0], pair[1]


def _lowered(tracer: _Tracer, make_arg) -> tuple[str, str]:
    """``repr`` of the lowered argument (nodes by name) and the graph it left."""
    x = tracer.create_proxy("placeholder", "x", (), {})
    arg = tracer.create_arg(make_arg(tracer, x))
    return repr(fx.node.map_aggregate(arg, lambda a: f"%{a.name}" if isinstance(a, fx.Node) else (type(a), a))), \
        str(tracer.graph)


Point = collections.namedtuple("Point", "a b")

ARGUMENTS = {
    "scalars": lambda t, x: (1, 2.5, True, 1j, "s", None, ..., torch.float16, torch.device("cpu"),
                             torch.strided, torch.channels_last),
    "proxies": lambda t, x: (x, [x, (x, 3)], {"k": x, "j": [x]}),
    "attribute": lambda t, x: (x.shape, x.dtype),
    "slices": lambda t, x: (slice(None, x, 2), slice(1, None)),
    "non-string keys": lambda t, x: {1: x, "a": 2},
    "namedtuple": lambda t, x: Point(x, 1),
    "parameter": lambda t, x: (t.root.weight, [t.root.weight]),
    "buffer": lambda t, x: (t.root.running_mean,),
    "constant tensor": lambda t, x: (torch.ones(2),),
    "range": lambda t, x: range(3),
    "int subclass": lambda t, x: (torch.Size([2, 3]), True.__class__(1)),
}


@pytest.mark.parametrize("name", sorted(ARGUMENTS))
def test_create_arg_lowers_as_torch_fx_does(name):
    fast, generic = _tracers(lambda: nn.BatchNorm1d(2))
    assert fast._arg_handlers, "the shortcut table is empty on this torch: nothing is compared"
    assert _lowered(fast, ARGUMENTS[name]) == _lowered(generic, ARGUMENTS[name])


class Sliced(nn.Module):
    """Arguments of every shortcut kind: sizes, slices, keywords, dtypes, a parameter and a buffer."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.register_buffer("scale", torch.ones(8))

    def forward(self, x):
        b, s = x.shape[:2]
        y = self.fc(x)[:, : s - 1, 2:].to(dtype=x.dtype) * self.scale[2:]
        y = torch.cat([y, y.new_zeros(b, 1, 6)], dim=1)
        return {"out": y.reshape(b, s, 2, 3).sum(dim=(-1,), keepdim=True) + self.fc.weight[0, 0]}


@pytest.mark.parametrize("example", [False, True])
def test_traces_equal_without_the_shortcuts(example, monkeypatch):
    """A whole trace (plain, and from example values: its own proxy classes) gives the same graph
    without the argument shortcuts, then also with torch.fx making every node with its arguments."""
    inputs = (torch.randn(2, 5, 8),) if example else None

    def traced():
        gm = trace_module(Sliced(), example_inputs=inputs)
        return gm.code, [(n.name, n.op, repr(n.target), repr(n.args), repr(n.kwargs), type(n.args),
                          type(n.kwargs), [a.name for a in n.all_input_nodes], [u.name for u in n.users],
                          repr(n.meta.get("nn_module_stack"))) for n in gm.graph.nodes]

    fast = traced()
    monkeypatch.setattr(tracing_shortcuts, "arg_handlers", lambda proxy_types: {})
    assert traced() == fast
    monkeypatch.setattr(tracer_module._Tracer, "_arguments_set_after", lambda self: False)
    assert traced() == fast


def test_module_stack_of_each_node_is_a_plain_ordered_dict_copy():
    class Inner(nn.Module):
        def forward(self, x):
            return x.relu() + 1

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        def forward(self, x):
            return self.inner(x) * 2

    gm = trace_module(Outer())
    plain = fx.symbolic_trace(Outer())
    ours = {n.name: n.meta.get("nn_module_stack") for n in gm.graph.nodes}
    theirs = {n.name: n.meta.get("nn_module_stack") for n in plain.graph.nodes}
    assert ours == theirs
    stacks = [s for s in ours.values() if s is not None]
    assert stacks and all(type(s) is collections.OrderedDict for s in stacks)
    assert len({id(s) for s in stacks}) == len(stacks)  # one copy per node, as torch.fx makes


def _quoted_by_traceback() -> str:
    """The line ``user_frame_line`` quoted before it walked frames itself (from ``traceback.extract_stack``)."""
    frames = [f for f in traceback.extract_stack()[:-2]
              if not any(p in f.filename.replace("\\", "/") for p in ("/torch/", "/fxprune/analysis/"))]
    return f"{frames[-1].filename}:{frames[-1].lineno}: {frames[-1].line}" if frames else "an unknown line"


def _through(function):
    return function()  # a frame standing for the capture's own caller (skipped by both)


def _user_code():
    return _through(values.user_frame_line), _through(_quoted_by_traceback)  # both on this line


@pytest.mark.parametrize("limit", [None, 3, 1])
def test_user_frame_line_quotes_what_the_traceback_quotes(limit, monkeypatch):
    if limit is not None:
        monkeypatch.setattr(sys, "tracebacklimit", limit, raising=False)
    ours, theirs = _user_code()
    assert ours == theirs
    if limit is None:
        assert ours.endswith("return _through(values.user_frame_line), _through(_quoted_by_traceback)  # both on "
                             "this line")


def test_create_node_makes_nodes_as_torch_fx_where_something_would_see_them(monkeypatch):
    """Calls are made without arguments (set after); with torch.fx's debug log on (it prints each
    new node) torch.fx makes them with their arguments."""
    import logging

    seen: list[tuple[str, bool]] = []
    monkeypatch.setattr(fx.Graph, "create_node", _recording(fx.Graph.create_node, seen))

    def calls_with_arguments() -> list[bool]:
        seen.clear()
        trace_module(Sliced())
        return [given for op, given in seen if op in ("call_function", "call_method", "call_module")]

    assert calls_with_arguments() and not any(calls_with_arguments())
    monkeypatch.setattr(logging.getLogger("torch.fx.proxy"), "isEnabledFor", lambda level: True)
    assert calls_with_arguments() and all(calls_with_arguments())


def _recording(create_node, seen):
    def recorded(self, op, target, args=None, kwargs=None, name=None, type_expr=None):
        seen.append((op, bool(args) or bool(kwargs)))
        return create_node(self, op, target, args, kwargs, name, type_expr)
    return recorded


class Decorated(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    @keywords_only
    def forward(self, x=None, mask=None, scale=None, **kwargs):
        return self.fc(x)


class Starred(nn.Module):
    """``*``/``**`` and keyword-only parameters a plain trace handles (a tensor default among them)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, *rest, bias=torch.zeros(4), **options):
        return self.fc(x) + bias


def test_a_plain_trace_failing_on_its_placeholders_fails_before_copying(monkeypatch):
    """The decorated forward fails as torch.fx fails on it, before the module tree is copied."""
    model = Decorated()
    with pytest.raises(Exception) as theirs:
        fx.Tracer().trace(copy_of(model))
    copies = []
    monkeypatch.setattr(tracer_module, "tracing_copy", lambda m: copies.append(m))
    before = dict(vars(model))
    with pytest.raises(type(theirs.value)) as ours:
        trace_module(model)
    assert str(ours.value) == str(theirs.value) and not copies
    assert vars(model) == before


def copy_of(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def test_placeholders_checked_first_leave_traceable_forwards_as_they_were():
    model = Starred()
    before = {k: (dict(v) if isinstance(v, dict) else v) for k, v in vars(model).items()}
    ours = trace_module(model)
    assert str(ours.graph) == str(fx.Tracer().trace(Starred()))  # (torch.fx cannot print a tensor default as code)
    assert {k: (dict(v) if isinstance(v, dict) else v) for k, v in vars(model).items()} == before
    assert [n.target for n in ours.graph.nodes if n.op == "placeholder"] == ["x", "bias", "*rest", "**options"]


def test_a_decorated_forward_is_still_traced_from_example_values():
    import fxprune.analysis.capture as capture

    gm = capture.trace(Decorated(), example_inputs=(torch.randn(2, 4),))
    assert [n.op for n in gm.graph.nodes].count("call_module") == 1
