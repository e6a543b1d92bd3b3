"""Expected bytes follow the layout the checkpoint was matched to, not the family's first.

DeepSeek-V3 has two healthy layouts of different sizes: the release (with its MTP layer,
BF16 router gates) and what transformers 5 writes (no MTP, F32 gates). A config rewritten
by transformers 5 lists the second first; a release checkpoint beside it must still be
held against the release's byte count.
"""

from __future__ import annotations

import json
from pathlib import Path

from pyaudit.cli import main
from pyaudit.manifest import build_manifest, layouts
from pyaudit.testing.stores import manifest_tensors, write_checkpoint

DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "vocab_size": 256,
    "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
    "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4,
    "n_shared_experts": 1, "n_routed_experts": 4, "kv_lora_rank": 16, "q_lora_rank": 24,
    "qk_rope_head_dim": 8, "v_head_dim": 16, "qk_nope_head_dim": 16, "n_group": 2,
    "topk_group": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1,
    "moe_layer_freq": 1, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "num_nextn_predict_layers": 1, "transformers_version": "5.24.0",
}  # fmt: skip


def test_release_checkpoint_under_a_v5_config_counts_release_bytes(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    names = [lay.name for lay in layouts(DEEPSEEK_V3)]
    # the v5 layout is listed first here (then the release's; then module-tree, lent by the
    # derived spec: tests/scan/test_lent_layouts.py)
    assert names == ["transformers>=5", "default", "module-tree"]
    release = build_manifest(DEEPSEEK_V3, "default")
    v5 = build_manifest(DEEPSEEK_V3, names[0])
    assert release.total_bytes != v5.total_bytes

    ckpt = tmp_path / "deepseek-release"
    write_checkpoint(ckpt, DEEPSEEK_V3, manifest_tensors(DEEPSEEK_V3, "default"), sparse=True)
    assert main(["scan", "--json", str(ckpt)]) == 0
    (report,) = json.loads(capsys.readouterr().out)["checkpoints"]
    assert report["layout"] == "default"
    assert report["status"] == "pass", report["findings"]
    assert report["bytes"] == {"found": release.total_bytes, "expected": release.total_bytes}
    assert report["tensors"]["expected"] == len(release.tensors)
