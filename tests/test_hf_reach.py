"""Hugging Face models through ``frontend="auto"`` and ``"export"`` with keyword inputs: whole heads,
dynamic shapes (issues 9 and 14).

Tiny configs, no download.  Plain symbolic tracing cannot trace these models;
``auto`` captures them with ``torch.fx`` from the example values (sizes stay
graph values, frozen branches are checked at run time), ``export`` with dynamic
batch and sequence dims: either way the pruned module runs at batch 1 and 7 and
at other sequence lengths, matching the masked original.
"""
from __future__ import annotations

import pytest
import torch

import fxprune
from fxprune.analysis.capture import bind_example_inputs
from fxprune.testing.check import mask_original

T = pytest.importorskip("transformers")

from fxprune.testing.hf_zoo import VOCAB, gpt2, llama  # noqa: E402

#: per model: the config, and the q/k/v (or fused c_attn) projections whose head groups must be pruned whole
MODELS = {"llama": (llama, "model.layers.0.self_attn.k_proj", 2),
          "gpt2": (gpt2, "transformer.h.0.attn.c_attn", 4)}


def _inputs(batch, seq):
    return {"input_ids": torch.randint(0, VOCAB, (batch, seq)),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long)}


@pytest.fixture(scope="module", params=[(name, frontend) for name in sorted(MODELS) for frontend in ("auto", "export")],
                ids=lambda p: "-".join(p))
def pruned(request):
    torch.manual_seed(0)
    name, frontend = request.param
    build, projection, heads = MODELS[name]
    model = build()[0]
    result = fxprune.prune(model, example_kwargs=_inputs(1, 8), ratio=0.5, frontend=frontend)  # whole heads: the default
    return model, result, projection, heads


def test_each_front_end_says_how_it_captured(pruned):
    _, result, _, _ = pruned
    analysis = result.analysis
    if analysis.config.frontend == "auto":
        assert analysis.frontend == "fx"
        assert analysis.notes[0] == "frontend='auto' used fx: it left no channel barrier"
        assert any(n.startswith("fx: traced from the example values") for n in analysis.notes)
    else:
        assert analysis.frontend == "export"
        assert any(n.startswith("export: dynamic dims input 0 dim 0, input 0 dim 1") for n in analysis.notes)
    assert all(n in result.report.notes for n in analysis.notes)


def test_heads_are_pruned_whole(pruned):
    _, result, projection, heads = pruned
    (group,) = [g for g in result.analysis.groups if any(m.param == projection + ".weight" for m in g.members)
                and not g.mixing]
    assert group.size == heads and len(result.plan[group.id]) == heads // 2


@pytest.mark.parametrize("batch,seq", [(1, 8), (7, 8), (1, 5), (7, 13)])
def test_the_pruned_module_runs_on_other_batch_sizes_and_lengths(pruned, batch, seq):
    model, result, _, _ = pruned
    analysis = result.analysis
    exact = {gid: chans for gid, chans in result.plan.items() if not analysis.groups[gid].mixing}
    gm = fxprune.apply(analysis, exact)
    given = _inputs(batch, seq)
    inputs = bind_example_inputs(model, (), given)
    with torch.no_grad():
        got, want = gm(*inputs).logits, mask_original(analysis, exact)(*inputs).logits
        full = result.graph_module(*inputs).logits
        alone = result.graph_module(*bind_example_inputs(model, (), {k: v[-1:] for k, v in given.items()})).logits
    assert got.shape == full.shape == (batch, seq, VOCAB)
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(alone, full[-1:], atol=1e-5)            # one row alone: nothing batch-sized baked in
