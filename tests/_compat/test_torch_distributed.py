"""The private torch.distributed name in lit_pretrain/_compat/torch_distributed.py still exists and means what it meant."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.distributed_c10d as c10d

from lit_pretrain._compat import torch_distributed as compat
from tests.helpers.distributed import spawn_on_gloo


def broken(what: str) -> str:
    return (
        f"torch {torch.__version__} changed {what} (lit_pretrain/_compat/torch_distributed.py was checked "
        f"against {compat.CHECKED_AGAINST}): update that module, then CHECKED_AGAINST"
    )


def _default_store_is_a_prefixed_tcp_store(rank: int, world_size: int) -> None:
    store = compat.default_store()
    assert isinstance(store, dist.Store), broken("what _get_default_store returns")
    while isinstance(store, dist.PrefixStore):
        store = store.underlying_store
    # The rank watchdog opens its own connection to this store's host and port.
    assert isinstance(store, dist.TCPStore) and store.port > 0, broken("the default group's store")


def test_the_default_store_is_the_process_groups_tcp_store():
    assert callable(getattr(c10d, "_get_default_store", None)), broken("distributed_c10d._get_default_store")
    spawn_on_gloo(_default_store_is_a_prefixed_tcp_store, 1, preload=[__name__])
