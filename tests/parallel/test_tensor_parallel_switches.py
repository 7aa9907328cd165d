"""Tensor parallelism (2 CPU processes, gloo; and with FSDP2, 4) with every model switch on gives the
one-process logits, loss and gradients; QK-norm's replicated weights get the gradient summed over all heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lit_pretrain.model import GPT, ModelConfig
from lit_pretrain.parallel.apply import parallelize
from lit_pretrain.parallel.config import ParallelConfig
from lit_pretrain.parallel.init import materialize
from tests.helpers.distributed import spawn_on_gloo

EOS = 0
SWITCHES = dict(
    qk_norm=True,
    mlp="relu2",
    logit_softcap=3.0,
    document_mask=True,
    eos_token_id=EOS,
    document_positions=True,
)


def _config(**overrides) -> ModelConfig:
    return ModelConfig.from_name("llama-debug", init_std=0.1, intermediate_size=96, **SWITCHES, **overrides)


def _full(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def _check_rank(rank: int, world_size: int) -> None:
    data_parallel = world_size // 2
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Replicate

    # Every data-parallel rank reads the same tokens, so FSDP2's averaged gradients are one process's.
    shape, names = (2,), ("tensor_parallel",)
    if data_parallel > 1:
        shape, names = (data_parallel, 2), ("data_parallel", "tensor_parallel")
    mesh = init_device_mesh("cpu", shape, mesh_dim_names=names)
    torch.manual_seed(0)
    reference = GPT(_config())
    torch.manual_seed(0)
    sharded = parallelize(GPT(_config()), ParallelConfig(), mesh)
    q_norm = sharded.blocks[0].attn.q_norm.weight
    assert isinstance(q_norm, DTensor) and q_norm.placements[-1] == Replicate(), "whole on every TP rank"
    block = sharded.blocks[0]
    rows = data_parallel  # FSDP2 splits dim 0 again
    assert block.attn.q.weight.to_local().shape == (32 // rows, 64), "q split by heads"
    assert block.mlp.fc.weight.to_local().shape == (48 // rows, 64), "relu2's fc split by columns"
    assert block.mlp.proj.weight.to_local().shape == (64 // rows, 48), "relu2's proj by rows"

    tokens = torch.randint(1, 256, (2, 33), generator=torch.Generator().manual_seed(1))
    tokens[0, 10] = tokens[0, 21] = tokens[1, 5] = EOS
    losses = []
    for model in (reference, sharded):
        logits = model(tokens[:, :-1])
        assert logits.abs().max() < 3.0, "soft-capped"
        loss = F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
        loss.backward()
        losses.append((logits.detach(), loss.detach()))
    torch.testing.assert_close(losses[1][0], losses[0][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(losses[1][1], losses[0][1], rtol=0, atol=1e-6)
    expected = dict(reference.named_parameters())
    for name, parameter in sharded.named_parameters():
        torch.testing.assert_close(_full(parameter.grad), expected[name].grad, rtol=0, atol=1e-5, msg=name)

    # Sharded initialisation draws zero-initialised projections and QK-norm weights as one process does.
    config = _config(zero_init_proj=True)
    with torch.device("meta"):
        whole, split = GPT(config), parallelize(GPT(config), ParallelConfig(), mesh)
    materialize(whole, "cpu", seed=7)
    materialize(split, "cpu", seed=7)
    for (name, a), b in zip(whole.named_parameters(), split.parameters(), strict=True):
        assert torch.equal(a, _full(b)), name
    assert torch.all(whole.blocks[1].mlp.proj.weight == 0)


def test_tensor_parallel_with_every_switch_matches_one_process():
    spawn_on_gloo(_check_rank, 2)


@pytest.mark.slow
def test_fsdp2_with_tensor_parallel_and_every_switch_matches_one_process():
    spawn_on_gloo(_check_rank, 4)
