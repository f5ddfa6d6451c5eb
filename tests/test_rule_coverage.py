"""Every key of the built-in registry, checked on its own single-op model.

* each torch function, Tensor method, operator and module key runs in a
  single-op model (tests/_op_samples.py) and its rule is checked against
  zero-masking there (``check_rules``): coverage is counted per key, not per
  rule;
* the same model is captured with ``torch.export``: every ATen op the key
  lowers to must have a rule (no barrier), so the two front ends cannot drift;
* every registered ATen key must be exercised by some exported sample.

Keys that cannot be sampled are listed, with the reason, in
``_op_samples.NOT_SAMPLED`` (and ATen keys in ``ATEN_NOT_EXERCISED`` below).
"""
from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from torch import nn

import fxprune
from fxprune.modules import ImplantedConv2d, ImplantedLinear
from fxprune.ops.builtin import TABLE
from fxprune.ops.registry import describe_key
from fxprune.testing.single_op import single_op_model
from fxprune.testing.soundness import check_rules

import _op_samples

_ATEN = torch._ops.OpOverloadPacket
FX_KEYS = sorted((k for k in TABLE if not isinstance(k, _ATEN) and k not in _op_samples.NOT_SAMPLED),
                 key=describe_key)
ATEN_KEYS = sorted((k for k in TABLE if isinstance(k, _ATEN)), key=describe_key)

#: ATen keys no exported sample produces on this torch version, with the reason
ATEN_NOT_EXERCISED: dict[str, str] = {
    "torch.ops.aten.empty_like": "its fx key is not sampled (uninitialised values)",
    "torch.ops.aten.new_empty": "its fx key is not sampled (uninitialised values)",
    "torch.ops.aten.rand_like": "its fx key is not sampled (random values)",
    "torch.ops.aten.randn_like": "its fx key is not sampled (random values)",
    "torch.ops.aten.sym_size": "appears only in programs exported with dynamic shapes",
    "torch.ops.aten.sym_numel": "appears only in programs exported with dynamic shapes",
}
#: fx keys whose exported form keeps a barrier, with the reason
EXPORT_BARRIERS: dict[Any, str] = {
    nn.LSTM: "exported as aten.lstm with a flat weight list, which has no rule",
    nn.GRU: "exported as aten.gru with a flat weight list, which has no rule",
    nn.RNN: "exported as aten.rnn_tanh with a flat weight list, which has no rule",
    ImplantedConv2d: "its forward gathers channels with a buffer index (index_select), which has no rule",
    ImplantedLinear: "its forward gathers channels with a buffer index (index_select), which has no rule",
}


def _model(key):
    return single_op_model(key, _op_samples.sample_for(key, TABLE[key]))


def _export(model, x):
    analysis = fxprune.analyze(model, x, frontend="export")
    return analysis.barriers, check_rules(model, x, trials=1, analysis=analysis)


@functools.lru_cache(maxsize=None)
def _exported(key):
    return _export(*_model(key))


@pytest.mark.parametrize("key", FX_KEYS, ids=describe_key)
def test_key_is_sound_on_its_single_op_model(key):
    report = check_rules(*_model(key), trials=2)
    assert key in report.checked_keys, f"{describe_key(key)} was not checked: {report.keys}"


@pytest.mark.parametrize("key", FX_KEYS, ids=describe_key)
def test_key_lowers_to_aten_ops_with_rules(key):
    barriers, _ = _exported(key)
    if key in EXPORT_BARRIERS:
        assert barriers, f"{describe_key(key)} exports without a barrier now: remove it from EXPORT_BARRIERS"
        return
    assert not barriers, [(b.op, b.reason) for b in barriers]


def test_every_aten_key_is_exercised():
    seen = set()
    for key in FX_KEYS:
        seen.update(_exported(key)[1].checked_keys)
    for key, sample in _op_samples.EXTRA_SAMPLES:
        barriers, report = _export(*single_op_model(key, sample))
        assert not barriers, (describe_key(key), [(b.op, b.reason) for b in barriers])
        seen.update(report.checked_keys)
    missing = [describe_key(k) for k in ATEN_KEYS
               if k not in seen and describe_key(k) not in ATEN_NOT_EXERCISED]
    assert not missing, f"ATen keys no exported sample checks: {missing}"


def test_not_sampled_keys_are_registered():
    for key in list(_op_samples.NOT_SAMPLED):
        assert key in TABLE, describe_key(key)
