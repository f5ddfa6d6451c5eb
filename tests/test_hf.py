"""Hugging Face models (tiny configs, no download): uniform pruning, materialize, save/load, generate."""
from __future__ import annotations

import pytest
import torch

import fxprune
from fxprune import MaterializeError
from fxprune.testing import hf_zoo

T = pytest.importorskip("transformers")

VOCAB = hf_zoo.VOCAB


#: the builders of the real-architecture suite (fxprune.testing.hf_zoo) these tests use
MODELS = {name: hf_zoo.SUITE[name] for name in ("llama", "qwen2", "gpt2", "bert")}
#: the config fields whose values the pruning (ratio 0.5, uniform, whole heads) halves
HALVED = {
    "llama": ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads"),
    "qwen2": ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads"),
    "gpt2": ("n_embd", "n_head"),                      # n_inner is not set: 4 * n_embd, halved with it
    "bert": ("hidden_size", "intermediate_size", "num_attention_heads"),
}


def build(name):
    return MODELS[name]()


def prune(model, inputs, **options):
    options = {"ratio": 0.5, "uniform": True, **options}                # the default split policy: whole heads
    return fxprune.prune(model, inputs, frontend="export", **options)


def logits(model, inputs):
    with torch.no_grad():
        return model(*inputs).logits


@pytest.mark.parametrize("name", sorted(MODELS))
def test_uniform_prune_materialise_save_and_reload(name, tmp_path):
    model, inputs = build(name)
    result = prune(model, inputs)
    small = result.materialize()
    assert type(small) is type(model) and type(small.config) is type(model.config)
    for field in HALVED[name]:
        assert getattr(small.config, field) == getattr(model.config, field) // 2, field
    assert torch.allclose(logits(small, inputs), logits(result.graph_module, inputs), atol=1e-5)
    small.save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path).eval()
    assert torch.allclose(logits(again, inputs), logits(result.graph_module, inputs), atol=1e-5)
    assert model.config.hidden_size == 32                            # the user's model and config are untouched


@pytest.mark.parametrize("name", ["llama", "qwen2"])
def test_generate_after_reload(name, tmp_path):
    model, inputs = build(name)
    prune(model, inputs).materialize().save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path).eval()
    out = again.generate(inputs[0], max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 12)
    cached = again.generate(inputs[0], max_new_tokens=4, do_sample=False, pad_token_id=0, use_cache=True)
    assert torch.equal(out, cached)


def test_non_uniform_widths_say_why_they_cannot_be_a_config():
    model, inputs = build("llama")
    result = prune(model, inputs, uniform=False, global_ranking=True, ratio=0.3)
    with pytest.raises(MaterializeError, match=r"different widths across blocks .*uniform=True"):
        result.materialize()
    small = result.materialize(hf_config=False)                      # the resized copy, stale config
    assert small.config.intermediate_size == 64
    assert torch.allclose(logits(small, inputs), logits(result.graph_module, inputs), atol=1e-5)


def test_channels_inside_a_head_cannot_be_a_config():
    model, inputs = build("llama")
    result = prune(model, inputs, split_policy="inner")
    with pytest.raises(MaterializeError, match=r"rotary_emb.inv_freq.*split_policy='heads', or the default 'auto'"):
        result.materialize()


def test_a_derived_attention_width_is_explained():
    model, inputs = build("gpt2")
    result = prune(model, inputs, ignore=["transformer.wte", "transformer.wpe"])     # heads pruned, n_embd kept
    with pytest.raises(MaterializeError, match="derive the attention width from hidden_size"):
        result.materialize()


def test_bert_mlp_only(tmp_path):
    model, inputs = build("bert")
    keep = ["bert.embeddings", T.models.bert.modeling_bert.BertSelfAttention]
    small = prune(model, inputs, ignore=keep).materialize()
    assert (small.config.hidden_size, small.config.intermediate_size, small.config.num_attention_heads) == (32, 32, 4)


def test_an_unset_head_dim_is_written_when_only_the_hidden_size_shrinks(tmp_path):
    model, inputs = build("qwen2")
    assert getattr(model.config, "head_dim", None) is None
    result = prune(model, inputs, ratio=0.4)                          # 2 kv heads x 0.4: no head removed
    small = result.materialize()
    assert (small.config.hidden_size, small.config.num_attention_heads, small.config.head_dim) == (20, 4, 8)
    small.save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path).eval()
    assert torch.allclose(logits(again, inputs), logits(result.graph_module, inputs), atol=1e-5)


def test_gpt2_conv1d_is_pruned_by_the_built_in_addmm_rule():
    """GPT-2's Conv1D is ``addmm(bias, x, W[in, out])`` at the ATen level: no barrier, every layer shrinks."""
    model, inputs = build("gpt2")
    analysis = fxprune.analyze(model, inputs, frontend="export")
    assert not [b for b in analysis.barriers if "addmm" in b.op]
    small = dict(prune(model, inputs).graph_module.named_parameters())
    for name, p in model.named_parameters():
        if name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
            assert small[name].shape == (p.shape[0] // 2, p.shape[1] // 2), name
