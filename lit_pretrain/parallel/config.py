"""`ParallelConfig`: how the model's blocks are sharded, recomputed, compiled and cast."""

from __future__ import annotations

from dataclasses import dataclass

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ParallelConfig:
    """How to wrap the model's blocks; every field is off or neutral by default."""

    activation_checkpointing_every: int = 0  # 0: off; k: recompute every k-th block in the backward
    compile: bool = False  # torch.compile each block (fullgraph), not the whole model
    fsdp_reshard_after_forward: bool = True  # ZeRO-3 (True) or ZeRO-2-like (False) per block
    fsdp_param_dtype: str | None = None  # e.g. "bfloat16": FSDP2 mixed precision for compute
    fsdp_reduce_dtype: str = "float32"  # gradients are reduced in this dtype
    float8: bool = (
        False  # float8 matmuls through torchao on H100-class GPUs; skipped with a warning elsewhere
    )

    def __post_init__(self) -> None:
        if self.activation_checkpointing_every < 0:
            raise ValueError(
                f"activation_checkpointing_every must be 0 (off) or positive, got {self.activation_checkpointing_every}"
            )
        for name in ("fsdp_param_dtype", "fsdp_reduce_dtype"):
            value = getattr(self, name)
            if value is not None and value not in DTYPES:
                raise ValueError(f"{name} must be one of {sorted(DTYPES)}, got {value!r}")
