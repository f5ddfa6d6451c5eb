"""Whole attention heads removed from transformers: a ViT with a fused qkv projection and a Llama
with grouped-query attention.

By default (``split_policy="auto"``) a reshape that splits a projection into ``(heads, head_dim)``
and feeds attention loses whole heads: for separate q/k/v projections, a key/value head goes
together with the query heads that share it; for a fused ``qkv.reshape(B, N, 3, heads, head_dim)``
the leading q/k/v factor is skipped.  No node names are needed.  ``split_policy="inner"`` prunes
``head_dim`` in every head instead, and ``split_overrides={node: policy}`` chooses per reshape.

Run: python examples/transformer_heads.py
"""
import torch

import fxprune
from fxprune.testing import zoo

# --- ViT, fused qkv -------------------------------------------------------------------------
vit, x = zoo.vit()                                     # dim 32, 4 heads of 8, two blocks
analysis = fxprune.analyze(vit, x)
print("head splits:", {c.node: c.resolved.value for c in analysis.state.splits})   # each qkv reshape: heads
heads = [g for g in analysis.groups if g.producers()[0].param.endswith("attn.qkv.weight")]
print("head groups:", [(g.id, g.size) for g in heads])   # one channel per head

# Prune half of the heads of every block (prefixes select the head groups: the residual stream
# and the MLPs keep their widths).
result = fxprune.prune(vit, x, ratio={"blocks.0.attn.qkv": 0.5, "blocks.1.attn.qkv": 0.5},
                       analysis=analysis)
for g in heads:
    print(f"group {g.id}: scores per head {result.scores[g.id].round(2).tolist()}, removed {result.plan[g.id]}")
qkv = result.graph_module.get_submodule("blocks.0.attn.qkv")
print("blocks.0.attn.qkv:", vit.blocks[0].attn.qkv.out_features, "->", qkv.out_features, "(3 x heads x 8)")
print([line.strip() for line in result.graph_module.code.splitlines() if ".reshape(" in line][0])
assert qkv.out_features == 3 * 2 * 8
with torch.no_grad():
    assert result.graph_module(*x).shape == vit(*x).shape

# --- Llama, grouped-query attention ------------------------------------------------------------
llama, tokens = zoo.llama()                            # 4 query heads, 2 key/value heads of 8
result = fxprune.prune(llama, tokens, ratio={"layers.0.self_attn.q_proj": 0.5, "layers.1.self_attn.q_proj": 0.5})
attn = result.graph_module.get_submodule("layers.0.self_attn")
print("layers.0: q_proj", llama.layers[0].self_attn.q_proj.out_features, "->", attn.q_proj.out_features,
      "k_proj", llama.layers[0].self_attn.k_proj.out_features, "->", attn.k_proj.out_features)
assert (attn.q_proj.out_features, attn.k_proj.out_features) == (16, 8)   # 2 query heads on 1 kv head
with torch.no_grad():
    print("logits:", tuple(result.graph_module(*tokens).shape))
small = result.materialize()                           # the Llama class again, its head counts resized
print("materialised: n_heads", small.layers[0].self_attn.n_heads, "n_kv_heads", small.layers[0].self_attn.n_kv_heads)
assert (small.layers[0].self_attn.n_heads, small.layers[0].self_attn.n_kv_heads) == (2, 1)
