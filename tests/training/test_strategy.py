"""AtomicModelParallelStrategy outside a process group: what it refuses before any rank starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def test_resuming_an_old_fused_qkv_sharded_checkpoint_is_a_clear_error(tmp_path: Path):
    import torch.distributed.checkpoint as dcp

    from lit_pretrain.training.strategy import AtomicModelParallelStrategy

    old = tmp_path / "old-sharded.ckpt"
    dcp.save({"state_dict": {"model.blocks.0.attn.qkv.weight": torch.zeros(4, 2)}}, checkpoint_id=old)
    with pytest.raises(ValueError, match="fused qkv projection .* --model.init_from PATH"):
        AtomicModelParallelStrategy().load_checkpoint(old)
