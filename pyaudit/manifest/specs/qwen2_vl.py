"""Qwen2-VL: ``Qwen2VLForConditionalGeneration`` (Qwen2 text model + ViT ``visual``).

Facts (transformers ``configuration_qwen2_vl``/``modeling_qwen2_vl``):

* Text: Qwen2 layers (q/k/v bias, o_proj none); fields in ``text_config`` (transformers 5
  re-saves) or at the top level (older configs); ``Qwen2VLTextConfig`` defaults.
* Vision (``vision_config`` only; ``Qwen2VLVisionConfig`` defaults: depth 32, embed_dim 1280,
  hidden_size 3584 = the merger's output width, mlp_ratio 4, num_heads 16, in_channels 3,
  patch_size 14, spatial_merge_size 2, temporal_patch_size 2):
  ``patch_embed.proj`` Conv3d without bias ``[embed_dim, in_channels, temporal_patch, patch,
  patch]``; ``blocks.{b}``: LayerNorms ``norm1``/``norm2`` (weight+bias), ``attn.qkv``
  ``[3 * embed_dim, embed_dim]`` and ``attn.proj`` with biases, ``mlp.fc1``/``fc2``
  (``embed_dim * mlp_ratio``) with biases; ``merger``: LayerNorm ``ln_q`` over embed_dim,
  ``mlp.0`` ``[embed_dim * merge**2]**2`` and ``mlp.2`` ``[hidden_size, embed_dim * merge**2]``,
  with biases. ``num_hidden_layers``/``num_attention_heads`` are aliases of
  ``depth``/``num_heads`` in the vision config (``attribute_map``); both spellings are read.
* Layouts (``_checkpoint_conversion_mapping``): legacy ``model.*`` / ``visual.*`` /
  ``lm_head``; transformers >= 4.52 module tree ``model.language_model.*`` /
  ``model.visual.*`` / ``lm_head``.
"""

from ..spec import Entry, Group, Layout, Linear, Repeat, Scope, Spec
from ._common import HEAD_DIM, KV_HEADS, causal_lm
from .qwen2 import LAYER

TEXT_DEFAULTS = {
    "vocab_size": 152064,
    "hidden_size": 8192,
    "intermediate_size": 29568,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "head_dim": None,
    "tie_word_embeddings": False,
}

TEXT_SCOPE = Scope(
    sources=("text_config", ""),
    defaults=TEXT_DEFAULTS,
    let={"num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM},
)

#: Other spellings of vision fields (``Qwen2VLVisionConfig.attribute_map``; Qwen2.5-VL's too).
VISION_ALIASES = {"num_hidden_layers": "depth", "num_attention_heads": "num_heads"}

LAYOUTS = (
    Layout("legacy"),
    Layout(
        "transformers>=4.52",
        (("model.", "model.language_model."), ("visual.", "model.visual.")),
    ),
)


def _vl(module: str, out: str, inp: str) -> Linear:
    return Linear(module, out, inp, bias=True, kind="vision_linear")


VISION: list[Entry] = [
    (
        "patch_embed.proj.weight",
        "embed_dim, in_channels, temporal_patch_size, patch_size, patch_size",
    ),
    Repeat(
        "b",
        "depth",
        [
            ("norm1.weight", "embed_dim"),
            ("norm1.bias", "embed_dim"),
            ("norm2.weight", "embed_dim"),
            ("norm2.bias", "embed_dim"),
            _vl("attn.qkv", "3 * embed_dim", "embed_dim"),
            _vl("attn.proj", "embed_dim", "embed_dim"),
            _vl("mlp.fc1", "mlp_hidden", "embed_dim"),
            _vl("mlp.fc2", "embed_dim", "mlp_hidden"),
        ],
        prefix="blocks.{b}.",
    ),
    ("merger.ln_q.weight", "embed_dim"),
    ("merger.ln_q.bias", "embed_dim"),
    _vl("merger.mlp.0", "merge_hidden", "merge_hidden"),
    _vl("merger.mlp.2", "hidden_size", "merge_hidden"),
]

SPEC = Spec(
    model_type="qwen2_vl",
    architectures=("Qwen2VLForConditionalGeneration",),
    scopes={
        "text": TEXT_SCOPE,
        "vision": Scope(
            sources=("vision_config",),
            defaults={
                "depth": 32,
                "embed_dim": 1280,
                "hidden_size": 3584,
                "mlp_ratio": 4,
                "num_heads": 16,
                "in_channels": 3,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
            },
            let={
                "mlp_hidden": "int(embed_dim * mlp_ratio)",
                "merge_hidden": "embed_dim * spatial_merge_size ** 2",
            },
            aliases=VISION_ALIASES,
        ),
    },
    tensors=[
        *causal_lm(LAYER),
        Group(VISION, prefix="visual.", scope="vision", section="vision"),
    ],
    layouts=LAYOUTS,
)
