"""Prune a tiny Hugging Face Llama uniformly, save it with save_pretrained, reload it and generate.

Needs ``transformers`` (the ``test`` extra); builds a random tiny config, downloads nothing.
Run: python examples/hf_llama.py
"""
import tempfile

import torch
import transformers

import fxprune

torch.manual_seed(0)
config = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, use_cache=False)
model = transformers.LlamaForCausalLM(config).eval()
tokens = torch.randint(0, 96, (1, 8))

# Hugging Face models need the torch.export front end; uniform=True keeps every layer's widths
# equal (one intermediate_size, one head count), and the default split policy removes whole heads
# (a key/value head with its query heads), so the result is again a LlamaConfig.
result = fxprune.prune(model, (tokens,), ratio=0.5, frontend="export", uniform=True)
small = result.materialize()                         # a LlamaForCausalLM built from an updated config
print({k: getattr(small.config, k) for k in ("hidden_size", "intermediate_size", "num_attention_heads",
                                             "num_key_value_heads", "head_dim")})

folder = tempfile.mkdtemp()
small.save_pretrained(folder)
again = transformers.LlamaForCausalLM.from_pretrained(folder).eval()
with torch.no_grad():
    same = torch.allclose(again(tokens).logits, result.graph_module(tokens).logits, atol=1e-5)
print("reloaded logits equal the pruned graph's:", same)
print("generated:", again.generate(tokens, max_new_tokens=5, do_sample=False, pad_token_id=0).tolist())
assert same
