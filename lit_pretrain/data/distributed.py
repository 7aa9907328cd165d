"""Which processes read different data: the data-parallel size and this process's rank among them."""

from __future__ import annotations

from typing import Any


def data_parallel_size_and_rank(trainer: Any) -> tuple[int, int]:
    """How many different micro-batches one pass reads, and which one is this process's.

    Read from the strategy's `distributed_sampler_kwargs`, Lightning's own answer to "how is the data
    split": tensor-parallel ranks of one group read the same data, so under tensor parallelism this is
    the world size divided by the tensor-parallel size, not the world size.
    """
    kwargs = getattr(trainer.strategy, "distributed_sampler_kwargs", None) or {}
    return int(kwargs.get("num_replicas", trainer.world_size)), int(kwargs.get("rank", trainer.global_rank))
