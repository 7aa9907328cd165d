"""The private litdata names in lit_pretrain/_compat/litdata.py still exist and mean what they meant."""

from __future__ import annotations

import inspect

import litdata
import litdata.streaming.dataset as litdata_dataset
from litdata import CombinedStreamingDataset, StreamingDataset
from litdata.utilities.env import _DistributedEnv

from lit_pretrain._compat import litdata as compat


def broken(what: str) -> str:
    return (
        f"litdata {litdata.__version__} changed {what} (lit_pretrain/_compat/litdata.py was checked against "
        f"{compat.CHECKED_AGAINST}): update that module, then CHECKED_AGAINST"
    )


def test_resume_estimates_worker_counts_in_replay_sampling():
    assert callable(getattr(litdata_dataset, "_replay_sampling", None)), broken("_replay_sampling")
    assert list(inspect.signature(StreamingDataset._resume).parameters) == [
        "self",
        "workers_chunks",
        "workers_intervals",
    ], broken("StreamingDataset._resume's parameters")
    assert "_replay_sampling(" in inspect.getsource(StreamingDataset._resume), broken(
        "where StreamingDataset._resume estimates each worker's samples"
    )


def test_distributed_env_takes_the_layout_and_is_detected_by_a_classmethod():
    layout = compat.data_parallel_env(4, 1, 2)
    assert (layout.world_size, layout.global_rank, layout.num_nodes) == (4, 1, 2), broken("_DistributedEnv")
    assert isinstance(_DistributedEnv.__dict__.get("detect"), classmethod), broken("_DistributedEnv.detect")
    with compat.detected_layout(layout):
        assert _DistributedEnv.detect() is layout
    assert _DistributedEnv.detect() is not layout, "detection is restored on leaving"


def test_combined_dataset_keeps_its_parts_in_datasets():
    assert "self._datasets" in inspect.getsource(CombinedStreamingDataset.__init__), broken(
        "CombinedStreamingDataset._datasets"
    )
