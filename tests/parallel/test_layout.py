"""`resolve_parallel_sizes` and `check_tensor_parallel_divides`: the one rule for the parallel layout."""

from __future__ import annotations

import pytest

from lit_pretrain.model import ModelConfig
from lit_pretrain.parallel.layout import check_tensor_parallel_divides, resolve_parallel_sizes


@pytest.mark.parametrize(
    ("data_parallel", "tensor_parallel", "num_nodes", "devices", "expected"),
    [
        # Both "auto": tensor parallel within a node, data parallel across nodes (Lightning's rule).
        ("auto", "auto", 1, 8, (1, 8)),
        ("auto", "auto", 4, 8, (4, 8)),
        # One "auto": the world size divided by the other (trainer/fsdp2.yaml on one node of 8 GPUs).
        ("auto", 1, 1, 8, (8, 1)),
        ("auto", 2, 2, 8, (8, 2)),
        (2, "auto", 2, 8, (2, 8)),
        # Both given, as ints or as the strings a command line gives.
        (2, 4, 1, 8, (2, 4)),
        ("4", "2", 1, 8, (4, 2)),
        ("auto", "auto", 1, 1, (1, 1)),
    ],
)
def test_sizes_resolve(data_parallel, tensor_parallel, num_nodes, devices, expected):
    assert resolve_parallel_sizes(data_parallel, tensor_parallel, num_nodes, devices) == expected


def test_sizes_that_do_not_make_the_world_are_refused():
    with pytest.raises(
        ValueError,
        match=r"data_parallel_size 2 x tensor_parallel_size 2 = 4 must equal devices x num_nodes = 8 x 1 = 8",
    ):
        resolve_parallel_sizes(2, 2, 1, 8)
    with pytest.raises(
        ValueError, match=r"tensor_parallel_size 3 must divide devices x num_nodes = 8 x 1 = 8"
    ):
        resolve_parallel_sizes("auto", 3, 1, 8)
    with pytest.raises(ValueError, match=r"data_parallel_size 3 must divide devices x num_nodes = 4 x 2 = 8"):
        resolve_parallel_sizes(3, "auto", 2, 4)
    with pytest.raises(ValueError, match='tensor_parallel_size must be a positive int or "auto", got 0'):
        resolve_parallel_sizes("auto", 0, 1, 8)
    with pytest.raises(ValueError, match="data_parallel_size must be a positive int or \"auto\", got 'half'"):
        resolve_parallel_sizes("half", 1, 1, 8)
    with pytest.raises(ValueError, match="devices per node must be a positive int, got -1"):
        resolve_parallel_sizes("auto", "auto", 1, -1)


def test_tensor_parallel_must_divide_heads_kv_heads_and_mlp_width():
    tinyllama = ModelConfig.from_name("tinyllama-1.1b")  # 32 heads, 4 KV heads, MLP width 5632
    check_tensor_parallel_divides(tinyllama, 1)
    check_tensor_parallel_divides(tinyllama, 4)
    with pytest.raises(ValueError, match=r"^tensor_parallel_size 8 must divide the model's n_kv_head \(4\)$"):
        check_tensor_parallel_divides(tinyllama, 8)
    with pytest.raises(
        ValueError,
        match=r"^tensor_parallel_size 3 must divide the model's n_head \(32\), n_kv_head \(4\) and "
        r"intermediate_size \(5632\)$",
    ):
        check_tensor_parallel_divides(tinyllama, 3)
    with pytest.raises(ValueError, match="tensor_parallel_size must be positive, got 0"):
        check_tensor_parallel_divides(tinyllama, 0)
