"""Recurrent modules prune by hidden units: nn.LSTM, nn.GRU, nn.RNN (gate-major rows, one space per module)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import fxprune
from fxprune.analysis.cost import node_macs
from fxprune.testing import check_pruning


class Tagger(nn.Module):
    """Embedding -> recurrent stack -> per-step head, reading the output and the final state."""

    def __init__(self, kind: type, layers: int = 1, bidirectional: bool = False, batch_first: bool = True,
                 use_state: bool = False) -> None:
        super().__init__()
        self.batch_first, self.use_state, self.lstm = batch_first, use_state, kind is nn.LSTM
        self.inp = nn.Linear(5, 8)
        self.rnn = kind(8, 12, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
        width = 12 * (2 if bidirectional else 1)
        self.head = nn.Linear(width, 3)
        if use_state:
            self.state_head = nn.Linear(12, 3)

    def forward(self, x):
        out, state = self.rnn(self.inp(x))
        y = self.head(out)
        if self.use_state:
            h = state[0] if self.lstm else state  # (h_n, c_n) or h_n
            y = y + self.state_head(h[-1]).unsqueeze(1 if self.batch_first else 0)
        return y


CASES = {
    "lstm": dict(kind=nn.LSTM),
    "gru_2_layers": dict(kind=nn.GRU, layers=2),
    "rnn": dict(kind=nn.RNN),
    "lstm_bidirectional_2_layers": dict(kind=nn.LSTM, layers=2, bidirectional=True),
    "lstm_sequence_first_state": dict(kind=nn.LSTM, batch_first=False, use_state=True),
    "gru_state": dict(kind=nn.GRU, use_state=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_recurrent_modules_prune_hidden_units_exactly(name):
    model = Tagger(**CASES[name]).eval()
    batch_first = CASES[name].get("batch_first", True)
    x = torch.randn(2, 6, 5) if batch_first else torch.randn(6, 2, 5)
    summary = check_pruning(model, (x,), ratio=0.5)
    assert summary.groups_checked >= 2
    analysis = fxprune.analyze(model, (x,))
    assert not analysis.barriers
    group = analysis.group_of("rnn.weight_hh_l0", 1)[0]
    assert group.size == 12
    result = fxprune.prune(model, (x,), ratio=0.5)
    rnn = result.graph_module.get_submodule("rnn")
    assert rnn.hidden_size == 6 and rnn.input_size == 4
    assert rnn.weight_ih_l0.shape == (gates_of(rnn) * 6, 4)
    assert result.graph_module(x).shape == model(x).shape


def gates_of(m: nn.Module) -> int:
    return {"LSTM": 4, "GRU": 3}.get(m.mode, 1)


def test_the_user_model_class_comes_back_with_the_pruned_hidden_size():
    model, x = Tagger(nn.LSTM, layers=2).eval(), torch.randn(2, 6, 5)
    before = copy.deepcopy(model.state_dict())
    result = fxprune.prune(model, (x,), ratio=0.5)
    eager = result.materialize()
    assert type(eager) is Tagger and eager.rnn.hidden_size == 6
    torch.testing.assert_close(eager(x), result.graph_module(x))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("why, build", [
    ("proj_size", lambda: nn.LSTM(8, 12, proj_size=4, batch_first=True)),
])
def test_unsupported_recurrent_forms_are_barriers_that_say_why(why, build):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.rnn = nn.Linear(5, 8), build()

        def forward(self, x):
            return self.rnn(self.inp(x))[0]

    analysis = fxprune.analyze(M(), (torch.randn(2, 6, 5),))
    assert any(why in b.reason for b in analysis.barriers)


def test_an_initial_state_makes_the_call_a_barrier():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.rnn, self.h0 = nn.Linear(5, 8), nn.GRU(8, 12, batch_first=True), nn.Linear(5, 12)

        def forward(self, x):
            return self.rnn(self.inp(x), self.h0(x[:, 0]).unsqueeze(0))[0]

    analysis = fxprune.analyze(M(), (torch.randn(2, 6, 5),))
    assert any("initial state" in b.reason for b in analysis.barriers)
    check_pruning(M(), (torch.randn(2, 6, 5),), ratio=0.5)


def test_recurrent_macs_count_every_gate_of_every_step():
    model, x = Tagger(nn.LSTM).eval(), torch.randn(2, 6, 5)
    report = fxprune.analyze(model, (x,))
    node = next(n for n in report.graph_module.graph.nodes if n.target == "rnn")
    assert node_macs(report.graph_module, node, report.registry) == 2 * 6 * 4 * 12 * (8 + 12)
