"""Gemma 3: text-only ``gemma3_text`` (``Gemma3ForCausalLM``) and multimodal ``gemma3``
(``Gemma3ForConditionalGeneration``: SigLIP vision tower + projector + Gemma 3 text model).

Facts (transformers ``configuration_gemma3``/``modeling_gemma3``/``modeling_siglip``):

* Text layers: Gemma 2's sandwich norms plus per-head ``self_attn.q_norm``/``k_norm``
  ``[head_dim]``; ``Gemma3TextConfig`` defaults (vocab 262208, hidden 2304, 26 layers,
  8 heads, 4 kv heads, head_dim 256) and ``tie_word_embeddings`` TRUE.
* Vision tower = ``SiglipVisionModel`` (canonically ``vision_tower.vision_model.*``): conv
  ``embeddings.patch_embedding`` ``[hidden, channels, patch, patch]`` + bias,
  ``embeddings.position_embedding`` ``[(image_size // patch_size) ** 2, hidden]``,
  ``encoder.layers.{i}`` (``layer_norm1/2``, ``self_attn.{q,k,v,out}_proj``, ``mlp.fc1/fc2``,
  all with biases), ``post_layernorm``; the attention-pooling ``head`` only when
  ``vision_use_head`` (SigLIP's default true; Gemma 3 configs set false).
  ``SiglipVisionConfig`` defaults: hidden 768, intermediate 3072, 12 layers, 12 heads,
  3 channels, image 224, patch 16.
* Projector: ``multi_modal_projector.mm_input_projection_weight`` ``[vision hidden, text
  hidden]`` (a bare parameter, not a Linear) and ``mm_soft_emb_norm`` ``[vision hidden]``.
* Layouts: every one transformers has written (language model / lm_head / vision tower /
  projector prefixes):

  ``legacy``
      ``language_model.model.`` / ``language_model.lm_head.`` /
      ``vision_tower.vision_model.`` / ``multi_modal_projector.``: the released checkpoints;
      what transformers < 4.52 writes, and what 4.52+ writes once ``save_pretrained``
      reverses ``_checkpoint_conversion_mapping`` (huggingface/transformers#38385; medgemma's
      index, config from 4.54, is in it).
  ``transformers>=4.52``
      ``model.language_model.`` / ``lm_head.`` / ``model.vision_tower.vision_model.`` /
      ``model.multi_modal_projector.``: the 4.52 in-memory module tree, written to disk while
      the reverse mapping was broken (transformers#38489; LLaMA-Factory#8338).
  ``transformers>=5``
      ``language_model.model.`` / ``language_model.lm_head.`` / ``vision_tower.`` /
      ``multi_modal_projector.``: transformers 5 maps ``gemma3`` onto the ``llava`` renames
      and ``SiglipVisionModel`` onto ``CLIPVisionModel``'s ``PrefixChange(prefix_to_remove=
      "vision_model")`` (``conversion_mapping.py``), so the tower has no ``vision_model.``
      level in memory; saving reverts the llava renames but not the prefix removal. A model
      it builds from a config is written so (checked with 5.24 ``save_pretrained``); a model
      it loaded is written back in the layout it was loaded from (all three round-trip).
"""

from ..spec import Entry, Group, Layout, Linear, Repeat, Scope, Spec
from ._common import HEAD_DIM, KV_HEADS, causal_lm, gated_mlp, llama_attention, sandwich_norms

TEXT_DEFAULTS = {
    "vocab_size": 262208,
    "hidden_size": 2304,
    "intermediate_size": 9216,
    "num_hidden_layers": 26,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "attention_bias": False,
    "tie_word_embeddings": True,
}

TEXT_SCOPE = Scope(
    sources=("text_config", ""),
    defaults=TEXT_DEFAULTS,
    let={"num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM},
)

LAYER: list[Entry] = [*llama_attention(qk_norm=True), *gated_mlp(), *sandwich_norms()]

TEXT_SPEC = Spec(
    model_type="gemma3_text",
    architectures=("Gemma3ForCausalLM",),
    scopes={"text": TEXT_SCOPE},
    tensors=causal_lm(LAYER),
)

VISION_SCOPE = Scope(
    sources=("vision_config",),
    defaults={
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_channels": 3,
        "image_size": 224,
        "patch_size": 16,
        "vision_use_head": True,
    },
    let={"num_patches": "(image_size // patch_size) ** 2"},
)


def _vl(module: str, out: str, inp: str) -> Linear:
    return Linear(module, out, inp, bias=True, kind="vision_linear")


#: SigLIP vision transformer (``SiglipVisionTransformer``), names below ``vision_model.``.
SIGLIP_VISION: list[Entry] = [
    ("embeddings.patch_embedding.weight", "hidden_size, num_channels, patch_size, patch_size"),
    ("embeddings.patch_embedding.bias", "hidden_size"),
    ("embeddings.position_embedding.weight", "num_patches, hidden_size"),
    Repeat(
        "j",
        "num_hidden_layers",
        [
            ("layer_norm1.weight", "hidden_size"),
            ("layer_norm1.bias", "hidden_size"),
            _vl("self_attn.k_proj", "hidden_size", "hidden_size"),
            _vl("self_attn.v_proj", "hidden_size", "hidden_size"),
            _vl("self_attn.q_proj", "hidden_size", "hidden_size"),
            _vl("self_attn.out_proj", "hidden_size", "hidden_size"),
            ("layer_norm2.weight", "hidden_size"),
            ("layer_norm2.bias", "hidden_size"),
            _vl("mlp.fc1", "intermediate_size", "hidden_size"),
            _vl("mlp.fc2", "hidden_size", "intermediate_size"),
        ],
        prefix="encoder.layers.{j}.",
    ),
    ("post_layernorm.weight", "hidden_size"),
    ("post_layernorm.bias", "hidden_size"),
    Group(
        [
            ("probe", "1, 1, hidden_size"),
            ("attention.in_proj_weight", "3 * hidden_size, hidden_size"),
            ("attention.in_proj_bias", "3 * hidden_size"),
            _vl("attention.out_proj", "hidden_size", "hidden_size"),
            ("layernorm.weight", "hidden_size"),
            ("layernorm.bias", "hidden_size"),
            _vl("mlp.fc1", "intermediate_size", "hidden_size"),
            _vl("mlp.fc2", "hidden_size", "intermediate_size"),
        ],
        prefix="head.",
        when="vision_use_head",
    ),
]

SPEC = Spec(
    model_type="gemma3",
    architectures=("Gemma3ForConditionalGeneration",),
    scopes={
        "text": TEXT_SCOPE,
        "vision": VISION_SCOPE,
        # The projector maps the vision width onto the text width.
        "projector": Scope(
            sources=("vision_config",),
            defaults={"hidden_size": 768},
            uses={"text_hidden_size": "text:hidden_size"},
        ),
    },
    tensors=[
        Group(causal_lm(LAYER), prefix="language_model.", section="text"),
        Group(SIGLIP_VISION, prefix="vision_tower.vision_model.", scope="vision", section="vision"),
        Group(
            [
                ("mm_input_projection_weight", "hidden_size, text_hidden_size"),
                ("mm_soft_emb_norm.weight", "hidden_size"),
            ],
            prefix="multi_modal_projector.",
            scope="projector",
            section="projector",
        ),
    ],
    layouts=(
        Layout("legacy"),
        Layout(
            "transformers>=4.52",
            (
                ("language_model.model.", "model.language_model."),
                ("language_model.lm_head.", "lm_head."),
                ("vision_tower.", "model.vision_tower."),
                ("multi_modal_projector.", "model.multi_modal_projector."),
            ),
        ),
        Layout("transformers>=5", (("vision_tower.vision_model.", "vision_tower."),)),
    ),
)
