"""Qwen2.5-VL: ``Qwen2_5_VLForConditionalGeneration``.

Facts (transformers ``configuration_qwen2_5_vl``/``modeling_qwen2_5_vl``):

* Text: as Qwen2-VL (Qwen2 layers, ``Qwen2_5_VLTextConfig`` defaults).
* Vision (``vision_config``; ``Qwen2_5_VLVisionConfig`` defaults: depth 32, hidden_size 3584,
  intermediate_size 3420, num_heads 16, in_channels 3, patch_size 14, spatial_merge_size 2,
  temporal_patch_size 2, out_hidden_size 3584): ``patch_embed.proj`` Conv3d without bias;
  ``blocks.{b}``: RMSNorms ``norm1``/``norm2`` (weight only), ``attn.qkv``/``attn.proj`` with
  biases, SwiGLU ``mlp.{gate,up,down}_proj`` with biases; ``merger``: RMSNorm ``ln_q``,
  ``mlp.0`` ``[hidden * merge**2]**2`` and ``mlp.2`` ``[out_hidden_size, hidden * merge**2]``.
* Layouts and vision field aliases: as Qwen2-VL.
"""

from ..spec import Entry, Group, Linear, Repeat, Scope, Spec
from ._common import causal_lm, gated_mlp
from .qwen2 import LAYER
from .qwen2_vl import LAYOUTS, TEXT_SCOPE, VISION_ALIASES


def _vl(module: str, out: str, inp: str) -> Linear:
    return Linear(module, out, inp, bias=True, kind="vision_linear")


VISION: list[Entry] = [
    (
        "patch_embed.proj.weight",
        "hidden_size, in_channels, temporal_patch_size, patch_size, patch_size",
    ),
    Repeat(
        "b",
        "depth",
        [
            ("norm1.weight", "hidden_size"),
            ("norm2.weight", "hidden_size"),
            _vl("attn.qkv", "3 * hidden_size", "hidden_size"),
            _vl("attn.proj", "hidden_size", "hidden_size"),
            *gated_mlp(prefix="mlp.", bias=True, kind="vision_linear"),
        ],
        prefix="blocks.{b}.",
    ),
    ("merger.ln_q.weight", "hidden_size"),
    _vl("merger.mlp.0", "merge_hidden", "merge_hidden"),
    _vl("merger.mlp.2", "out_hidden_size", "merge_hidden"),
]

SPEC = Spec(
    model_type="qwen2_5_vl",
    architectures=("Qwen2_5_VLForConditionalGeneration",),
    scopes={
        "text": TEXT_SCOPE,
        "vision": Scope(
            sources=("vision_config",),
            defaults={
                "depth": 32,
                "hidden_size": 3584,
                "intermediate_size": 3420,
                "num_heads": 16,
                "in_channels": 3,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "out_hidden_size": 3584,
            },
            let={"merge_hidden": "hidden_size * spatial_merge_size ** 2"},
            aliases=VISION_ALIASES,
        ),
    },
    tensors=[
        *causal_lm(LAYER),
        Group(VISION, prefix="visual.", scope="vision", section="vision"),
    ],
    layouts=LAYOUTS,
)
