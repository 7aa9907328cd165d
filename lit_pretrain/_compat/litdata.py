"""Private litdata names: checked against litdata 0.2.76 (`CHECKED_AGAINST`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import litdata.streaming.dataset as litdata_dataset
from litdata import CombinedStreamingDataset, StreamingDataset
from litdata.utilities.env import _DistributedEnv

CHECKED_AGAINST = "0.2.76"


def data_parallel_env(world_size: int, global_rank: int, num_nodes: int) -> Any:
    """The layout object litdata splits data by, for the data-parallel ranks rather than all processes."""
    return _DistributedEnv(world_size, global_rank, num_nodes)


@contextmanager
def detected_layout(layout: Any) -> Iterator[None]:
    """While open, litdata's own layout detection answers `layout` (checked in `load_state_dict`)."""
    detect = _DistributedEnv.__dict__["detect"]
    _DistributedEnv.detect = classmethod(lambda cls: layout)
    try:
        yield
    finally:
        _DistributedEnv.detect = detect


def combined_parts(dataset: Any) -> list[StreamingDataset]:
    """The datasets a `CombinedStreamingDataset` mixes; a plain dataset is its own only part."""
    if isinstance(dataset, CombinedStreamingDataset):
        return list(dataset._datasets)
    return [dataset]


class WorkerCountResumingDataset(StreamingDataset):
    """A `StreamingDataset` that resumes each data worker at the number of samples it really gave.

    litdata saves one count per source and, on resume, estimates each worker's share by assuming the
    workers took turns batch by batch (`_replay_sampling`). In a weighted mixture each worker draws its
    sources at random, so the shares differ; when `samples_per_worker` is set, the resume uses it instead.
    """

    samples_per_worker: dict[int, int] | None = None

    def _resume(self, workers_chunks: list[list[int]], workers_intervals: list[Any]) -> None:
        if not self.samples_per_worker:
            super()._resume(workers_chunks, workers_intervals)
            return
        estimate = litdata_dataset._replay_sampling
        litdata_dataset._replay_sampling = lambda *_: dict(self.samples_per_worker)
        try:
            super()._resume(workers_chunks, workers_intervals)
        finally:
            litdata_dataset._replay_sampling = estimate
