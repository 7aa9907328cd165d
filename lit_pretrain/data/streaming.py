"""Exact-resume wrappers over litdata: source tags, index access, and the consumed-batch loader state."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import torch
from litdata import StreamingDataLoader, StreamingDataset
from torch.utils.data import Dataset

from lit_pretrain._compat.litdata import WorkerCountResumingDataset, combined_parts, detected_layout


class TagWithSource:
    """litdata transform: attach the index of the source a window came from (picklable for workers)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, tokens: torch.Tensor) -> dict[str, Any]:
        return {"tokens": tokens, "source": self.index}


class WindowsByIndex(Dataset):
    """A `StreamingDataset` read by index, as a map-style dataset (for samplers that split by index)."""

    def __init__(self, dataset: StreamingDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index]


class ConsumedStateLoader(StreamingDataLoader):
    """A `StreamingDataLoader` whose `state_dict` counts the batches training consumed, not those fetched.

    Lightning fetches one batch ahead of the training step. litdata counts that batch as drawn, so a
    checkpoint saved after step k would resume at batch k + 2 and skip one. This loader remembers its
    state after each batch it hands out; `mark_consumed` (called as each batch reaches the training
    step) moves the saved state forward by one batch. `wait_seconds` is the time spent waiting for batches.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending_states: deque[dict[str, Any]] = deque()
        self._consumed_state: dict[str, Any] | None = None
        # Seconds the caller has spent waiting for batches, all iterations together (for perf metrics).
        self.wait_seconds = 0.0

    def __iter__(self) -> Iterator[Any]:
        """Batches, as litdata yields them, remembering the state after each and timing each wait."""
        self._pending_states.clear()
        self._consumed_state = None
        batches = super().__iter__()
        while True:
            started = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                self.wait_seconds += time.perf_counter() - started
            self._pending_states.append(super().state_dict())
            yield batch

    def mark_consumed(self) -> None:
        """The oldest batch handed out has reached the training step."""
        if self._pending_states:
            self._consumed_state = self._pending_states.popleft()

    def state_dict(self) -> dict[str, Any]:
        """The state after the last consumed batch (the live state when none is fetched ahead)."""
        if self._pending_states and self._consumed_state is not None:
            return self._consumed_state
        return super().state_dict()

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        """Restore a saved position (forgetting any remembered states)."""
        self._pending_states.clear()
        self._consumed_state = None
        parts = combined_parts(self.dataset)
        # litdata checks the saved layout against the process group's; under tensor parallelism the
        # datasets' data-parallel layout is the one that counts, so that is what detection answers.
        with detected_layout(parts[0].distributed_env):
            super().load_state_dict(obj)
        if len(parts) > 1:
            per_worker = obj.get("num_samples_yielded", {})
            for index, dataset in enumerate(parts):
                if isinstance(dataset, WorkerCountResumingDataset):
                    dataset.samples_per_worker = {int(w): counts[index] for w, counts in per_worker.items()}
