"""Real library architectures: tiny ``transformers`` models (random weights, no download).

Every builder seeds the RNG with ``torch.manual_seed(0)`` and returns
``(model.eval(), example_inputs)``, ``example_inputs`` a tuple of positional
inputs (``input_ids`` of shape ``(1, SEQ)`` for language models and text
encoders, ``pixel_values`` of shape ``(1, 3, IMAGE, IMAGE)`` for vision
models).  Configurations are tiny (hidden size 32, two layers, 32x32 images) so
that the whole suite is analysed and checked in seconds per model.

``transformers`` is a test extra, not a runtime dependency of fxprune: it is
imported on the first call of a builder, never at import time of this module.

:data:`SUITE` maps model names to builders (the suite of issue 9: decoder LMs,
text encoders, vision transformers and CNNs); :data:`KINDS` says which kind of
input each takes.  :func:`linear_conv_layers` and :func:`output_layers` name the
layers a "layers shrunk" measure counts, :func:`layers_shrunk` measures it and
:func:`channel_barriers` picks the barriers that hold parameter channels back.

Example:
    >>> from fxprune.testing import hf_zoo
    >>> sorted(hf_zoo.SUITE)[:3]
    ['bert', 'clip_vision', 'convnext']
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.fx as fx

from .. import ir

__all__ = [
    "VOCAB",
    "SEQ",
    "IMAGE",
    "SUITE",
    "KINDS",
    "build",
    "transformers_module",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "phi3",
    "gpt2",
    "gpt_neox",
    "opt",
    "bert",
    "roberta",
    "distilbert",
    "t5_encoder",
    "vit",
    "deit",
    "swin",
    "convnext",
    "resnet",
    "mobilenet_v2",
    "efficientnet",
    "dinov2",
    "clip_vision",
    "linear_conv_layers",
    "output_layers",
    "layers_shrunk",
    "channel_barriers",
]

#: vocabulary size of the language models and text encoders
VOCAB = 96
#: sequence length of the example ``input_ids``
SEQ = 8
#: side of the example images
IMAGE = 32


def transformers_module() -> Any:
    """The ``transformers`` package (a test extra), imported on first use."""
    import transformers

    return transformers


def _tokens() -> tuple[torch.Tensor]:
    return (torch.randint(0, VOCAB, (1, SEQ)),)


def _pixels() -> tuple[torch.Tensor]:
    return (torch.randn(1, 3, IMAGE, IMAGE),)


def _text(model: torch.nn.Module) -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
    return model.eval(), _tokens()


def _vision(model: torch.nn.Module) -> tuple[torch.nn.Module, tuple[torch.Tensor]]:
    return model.eval(), _pixels()


_DECODER = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, use_cache=False)


# -- decoder language models ------------------------------------------------------------------------
def llama() -> tuple[torch.nn.Module, tuple]:
    """``LlamaForCausalLM``: RMSNorm, rotary embeddings, GQA (4 heads, 2 kv heads), SwiGLU MLP."""
    T = transformers_module()
    torch.manual_seed(0)
    return _text(T.LlamaForCausalLM(T.LlamaConfig(**_DECODER)))


def mistral() -> tuple[torch.nn.Module, tuple]:
    """``MistralForCausalLM``: Llama-like with GQA and (unused at this length) sliding-window attention."""
    T = transformers_module()
    torch.manual_seed(0)
    return _text(T.MistralForCausalLM(T.MistralConfig(**_DECODER, head_dim=8)))


def qwen2() -> tuple[torch.nn.Module, tuple]:
    """``Qwen2ForCausalLM``: Llama-like with q/k/v biases, GQA."""
    T = transformers_module()
    torch.manual_seed(0)
    return _text(T.Qwen2ForCausalLM(T.Qwen2Config(**_DECODER)))


def qwen3() -> tuple[torch.nn.Module, tuple]:
    """``Qwen3ForCausalLM``: GQA with per-head RMSNorm of queries and keys (``q_norm``/``k_norm``)."""
    T = transformers_module()
    torch.manual_seed(0)
    return _text(T.Qwen3ForCausalLM(T.Qwen3Config(**_DECODER, head_dim=8)))


def gemma() -> tuple[torch.nn.Module, tuple]:
    """``GemmaForCausalLM``: scaled embeddings, RMSNorm with ``1 + weight``, GeGLU MLP, tied head."""
    T = transformers_module()
    torch.manual_seed(0)
    return _text(T.GemmaForCausalLM(T.GemmaConfig(**_DECODER, head_dim=8)))


def phi3() -> tuple[torch.nn.Module, tuple]:
    """``Phi3ForCausalLM``: fused ``qkv_proj`` and ``gate_up_proj`` (split by slicing), GQA."""
    T = transformers_module()
    torch.manual_seed(0)
    return _text(T.Phi3ForCausalLM(T.Phi3Config(**_DECODER, pad_token_id=0, bos_token_id=0, eos_token_id=0)))


def gpt2() -> tuple[torch.nn.Module, tuple]:
    """``GPT2LMHeadModel``: ``Conv1D`` layers (``addmm``), fused ``c_attn`` split in three, tied head."""
    T = transformers_module()
    torch.manual_seed(0)
    return _text(T.GPT2LMHeadModel(T.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                use_cache=False, bos_token_id=0, eos_token_id=0)))


def gpt_neox() -> tuple[torch.nn.Module, tuple]:
    """``GPTNeoXForCausalLM``: fused per-head ``query_key_value``, partial rotary, parallel residual."""
    T = transformers_module()
    torch.manual_seed(0)
    return _text(T.GPTNeoXForCausalLM(T.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                                      num_hidden_layers=2, num_attention_heads=4,
                                                      max_position_embeddings=64, use_cache=False)))


def opt() -> tuple[torch.nn.Module, tuple]:
    """``OPTForCausalLM``: learned positions (offset 2), pre-LayerNorm, ReLU MLP."""
    T = transformers_module()
    torch.manual_seed(0)
    return _text(T.OPTForCausalLM(T.OPTConfig(vocab_size=VOCAB, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                              num_attention_heads=4, max_position_embeddings=64,
                                              word_embed_proj_dim=32, use_cache=False)))


# -- text encoders ---------------------------------------------------------------------------------
_ENCODER = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=64)


def bert() -> tuple[torch.nn.Module, tuple]:
    """``BertForMaskedLM``: post-LayerNorm encoder, token-type embeddings, MLM head tied to the embeddings."""
    T = transformers_module()
    torch.manual_seed(0)
    return _text(T.BertForMaskedLM(T.BertConfig(**_ENCODER)))


def roberta() -> tuple[torch.nn.Module, tuple]:
    """``RobertaForMaskedLM``: BERT with padding-aware position ids (built from ``input_ids``)."""
    T = transformers_module()
    torch.manual_seed(0)
    return _text(T.RobertaForMaskedLM(T.RobertaConfig(**_ENCODER, pad_token_id=1)))


def distilbert() -> tuple[torch.nn.Module, tuple]:
    """``DistilBertForMaskedLM``: no token types, ``q_lin``/``k_lin``/``v_lin``, vocab projector."""
    T = transformers_module()
    torch.manual_seed(0)
    return _text(T.DistilBertForMaskedLM(T.DistilBertConfig(vocab_size=VOCAB, dim=32, hidden_dim=64, n_layers=2,
                                                            n_heads=4, max_position_embeddings=64)))


def t5_encoder() -> tuple[torch.nn.Module, tuple]:
    """``T5EncoderModel``: RMS-style LayerNorm, relative position bias, bias-free projections."""
    T = transformers_module()
    torch.manual_seed(0)
    return _text(T.T5EncoderModel(T.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                             num_heads=4, relative_attention_num_buckets=8,
                                             relative_attention_max_distance=16, use_cache=False)))


# -- vision transformers --------------------------------------------------------------------------
_VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=IMAGE,
            patch_size=8, num_labels=10)


def vit() -> tuple[torch.nn.Module, tuple]:
    """``ViTForImageClassification``: conv patch embedding, class token, separate q/k/v."""
    T = transformers_module()
    torch.manual_seed(0)
    return _vision(T.ViTForImageClassification(T.ViTConfig(**_VIT)))


def deit() -> tuple[torch.nn.Module, tuple]:
    """``DeiTForImageClassification``: ViT with a distillation token."""
    T = transformers_module()
    torch.manual_seed(0)
    return _vision(T.DeiTForImageClassification(T.DeiTConfig(**_VIT)))


def swin() -> tuple[torch.nn.Module, tuple]:
    """``SwinForImageClassification``: shifted windows (``roll``), relative position bias, patch merging."""
    T = transformers_module()
    torch.manual_seed(0)
    return _vision(T.SwinForImageClassification(T.SwinConfig(image_size=IMAGE, patch_size=2, embed_dim=16,
                                                             depths=[2, 2], num_heads=[2, 4], window_size=4,
                                                             num_labels=10)))


def dinov2() -> tuple[torch.nn.Module, tuple]:
    """``Dinov2ForImageClassification``: layer scale, interpolated position embeddings, cls + mean-patch head."""
    T = transformers_module()
    torch.manual_seed(0)
    return _vision(T.Dinov2ForImageClassification(T.Dinov2Config(hidden_size=32, num_hidden_layers=2,
                                                                 num_attention_heads=4, mlp_ratio=2,
                                                                 image_size=IMAGE, patch_size=8, num_labels=10)))


def clip_vision() -> tuple[torch.nn.Module, tuple]:
    """``CLIPVisionModel``: pre-LayerNorm, quick-GELU MLP; outputs the hidden states and the pooled class token."""
    T = transformers_module()
    torch.manual_seed(0)
    return _vision(T.CLIPVisionModel(T.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                        num_attention_heads=4, image_size=IMAGE, patch_size=8)))


# -- convolutional networks -------------------------------------------------------------------------
def convnext() -> tuple[torch.nn.Module, tuple]:
    """``ConvNextForImageClassification``: depthwise 7x7, channels-last LayerNorm, layer scale."""
    T = transformers_module()
    torch.manual_seed(0)
    return _vision(T.ConvNextForImageClassification(T.ConvNextConfig(num_stages=2, hidden_sizes=[16, 32], depths=[1, 1],
                                                                     num_labels=10)))


def resnet() -> tuple[torch.nn.Module, tuple]:
    """``ResNetForImageClassification``: bottleneck blocks with projection shortcuts."""
    T = transformers_module()
    torch.manual_seed(0)
    return _vision(T.ResNetForImageClassification(T.ResNetConfig(embedding_size=16, hidden_sizes=[32, 64],
                                                                 depths=[1, 1], layer_type="bottleneck",
                                                                 num_labels=10)))


def mobilenet_v2() -> tuple[torch.nn.Module, tuple]:
    """``MobileNetV2ForImageClassification``: inverted residuals, depthwise convs, ReLU6."""
    T = transformers_module()
    torch.manual_seed(0)
    return _vision(T.MobileNetV2ForImageClassification(T.MobileNetV2Config(depth_multiplier=0.25, image_size=IMAGE,
                                                                           num_labels=10)))


def efficientnet() -> tuple[torch.nn.Module, tuple]:
    """``EfficientNetForImageClassification``: MBConv with squeeze-excitation, ``same`` padding."""
    T = transformers_module()
    torch.manual_seed(0)
    return _vision(T.EfficientNetForImageClassification(T.EfficientNetConfig(
        image_size=IMAGE, width_coefficient=0.25, depth_coefficient=1.0, kernel_sizes=[3, 3, 5],
        in_channels=[32, 16, 24], out_channels=[16, 24, 40], strides=[1, 2, 2], num_block_repeats=[1, 2, 1],
        expand_ratios=[1, 6, 6], hidden_dim=320, num_labels=10)))  # hidden_dim: round_filters(1280) at width 0.25


#: the suite of issue 9, name -> builder
SUITE: dict[str, Callable[[], tuple[torch.nn.Module, tuple]]] = {
    "llama": llama, "mistral": mistral, "qwen2": qwen2, "qwen3": qwen3, "gemma": gemma, "phi3": phi3,
    "gpt2": gpt2, "gpt_neox": gpt_neox, "opt": opt,
    "bert": bert, "roberta": roberta, "distilbert": distilbert, "t5_encoder": t5_encoder,
    "vit": vit, "deit": deit, "swin": swin, "dinov2": dinov2, "clip_vision": clip_vision,
    "convnext": convnext, "resnet": resnet, "mobilenet_v2": mobilenet_v2, "efficientnet": efficientnet,
}
#: the kind of example input of each model: ``text`` (input_ids) or ``vision`` (pixel_values)
KINDS: dict[str, str] = {name: ("text" if name in ("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3", "gpt2",
                                                   "gpt_neox", "opt", "bert", "roberta", "distilbert",
                                                   "t5_encoder") else "vision") for name in SUITE}


def build(name: str) -> tuple[torch.nn.Module, tuple]:
    """The model ``name`` of :data:`SUITE` and its example inputs."""
    try:
        return SUITE[name]()
    except KeyError:
        raise KeyError(f"unknown model {name!r}; the suite: {sorted(SUITE)}") from None


# -- measures -----------------------------------------------------------------------------------------
def _layer_types() -> tuple[type, ...]:
    types: list[type] = [torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
                         torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d]
    try:
        from transformers.pytorch_utils import Conv1D  # GPT-2's transposed linear
        types.append(Conv1D)
    except ImportError:  # pragma: no cover - transformers absent: no such layers either
        pass
    return tuple(types)


def linear_conv_layers(model: torch.nn.Module) -> dict[str, str]:
    """``{module name: weight name}`` of every linear and convolution layer of ``model``.

    ``nn.Linear``, ``nn.Conv*d``, ``nn.ConvTranspose*d`` and ``transformers``'
    ``Conv1D``; a layer whose weight is tied to an earlier one's (a tied LM head)
    is listed under its own name.
    """
    types = _layer_types()
    return {name: f"{name}.weight" if name else "weight" for name, m in model.named_modules(remove_duplicate=False)
            if isinstance(m, types) and getattr(m, "weight", None) is not None}


def _node_weights(gm: fx.GraphModule, node: fx.Node) -> set[str]:
    """The parameter names a node applies: its module's, or those of its ``get_attr`` inputs."""
    if node.op == "call_module":
        return {f"{node.target}.{n}" for n, _ in gm.get_submodule(str(node.target)).named_parameters()}
    names = set()
    for a in node.all_input_nodes:
        if a.op == "get_attr":
            names.add(str(a.target))
    return names


def _tensor_inputs(node: fx.Node) -> list[fx.Node]:
    return [a for a in node.all_input_nodes if a.op != "get_attr"
            and isinstance(a.meta.get(ir.SPEC), ir.TensorSpec)]


def output_layers(gm: fx.GraphModule, layers: dict[str, str]) -> set[str]:
    """The layers (of ``layers``, as from :func:`linear_conv_layers`) that compute a model output.

    Found by walking back from every output through nodes that hold no
    parameter and read one tensor (views, dropout, pooling, ``getitem``) to the
    first node holding parameters: if that node applies a layer's weight, the
    layer's output channels are the model's (a classifier, an LM head) and can
    never be pruned.  ``gm`` is an analysed graph (its nodes carry
    :data:`fxprune.ir.SPEC`).
    """
    by_weight = {w: name for name, w in layers.items()}
    found: set[str] = set()
    out = next(n for n in gm.graph.nodes if n.op == "output")
    todo = list(out.all_input_nodes)
    seen: set[fx.Node] = set()
    while todo:
        node = todo.pop()
        if node in seen or node.op in ("placeholder", "get_attr"):
            continue
        seen.add(node)
        weights = _node_weights(gm, node)
        if weights:
            found.update(by_weight[w] for w in weights if w in by_weight)
            continue
        inputs = _tensor_inputs(node)
        if len(inputs) == 1 or not isinstance(node.meta.get(ir.SPEC), ir.TensorSpec):
            todo.extend(inputs if inputs else node.all_input_nodes)
    return found


def layers_shrunk(model: torch.nn.Module, pruned: torch.nn.Module, analysed: fx.GraphModule
                  ) -> tuple[list[str], list[str]]:
    """``(shrunk, counted)``: the non-output linear/conv layers of ``model``, and those ``pruned`` made smaller.

    A layer counts as shrunk if its weight lost rows or columns (output or input
    channels); layers computing a model output (:func:`output_layers`) are not
    counted.  ``analysed`` is the analysed graph of ``model``, ``pruned`` the
    pruned module (parameters under the same names).
    """
    layers = linear_conv_layers(model)
    excluded = output_layers(analysed, layers)
    before = dict(model.named_parameters(remove_duplicate=False))
    after = dict(pruned.named_parameters(remove_duplicate=False))
    counted = [name for name in layers if name not in excluded]
    shrunk = []
    for name in counted:
        weight = layers[name]
        if weight not in after:
            raise KeyError(f"the pruned module has no parameter {weight!r}")
        if tuple(after[weight].shape) != tuple(before[weight].shape):
            shrunk.append(name)
    return shrunk, counted


def channel_barriers(analysis: Any) -> list[Any]:
    """The barriers of ``analysis`` that hold parameter channels: those that block pruning.

    A barrier fixes the channels of the values it reads; it is a channel barrier
    if one of them shares channels (atoms) with a dimension of a parameter
    (buffers do not count).  Barriers on values no parameter channel reaches
    (building masks, positions or indices from integer inputs and buffers)
    prune nothing either way.
    """
    state = analysis.state
    atoms = state.atoms
    weights = {name for name, _ in analysis.graph_module.named_parameters(remove_duplicate=False)}
    param_roots: set[int] = set()
    for name, labels in state.param_labels.items():
        if name not in weights:  # a buffer (position ids, token types): no channel to prune
            continue
        for arr in ir.iter_label_arrays(labels):
            param_roots.update(atoms.find(arr).tolist())
    nodes = {n.name: n for n in analysis.graph_module.graph.nodes}
    found = []
    for b in analysis.barriers:
        node = nodes.get(b.node)
        if node is None:
            found.append(b)
            continue
        roots: set[int] = set()
        for a in node.all_input_nodes:
            for arr in ir.iter_label_arrays(a.meta.get(ir.CHANNELS)):
                roots.update(atoms.find(arr).tolist())
        if roots & param_roots:
            found.append(b)
    return found

