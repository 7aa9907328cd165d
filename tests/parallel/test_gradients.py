"""The global gradient norm and clipping, against torch.nn.utils and literal values.

Plain tensors are checked against torch's own functions; DTensors on two meshes (which torch's functions
cannot mix) on a one-process gloo group, against literals. Real sharding over several processes is
covered by test_distributed.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from lit_pretrain.parallel.gradients import clip_grad_norm_, total_grad_norm


def parameters_with_grads(*grads: torch.Tensor | None) -> list[torch.Tensor]:
    """Leaf tensors whose .grad is each of `grads` (None: a parameter without a gradient)."""
    parameters = []
    for grad in grads:
        shape = grad.shape if grad is not None else (3,)
        dtype = grad.dtype if grad is not None else torch.float32
        parameter = torch.nn.Parameter(torch.zeros(shape, dtype=dtype))
        parameter.grad = None if grad is None else grad.clone()
        parameters.append(parameter)
    return parameters


def random_parameters(seed: int, dtypes=(torch.float32,) * 4) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 2, 4), (11,)]
    return parameters_with_grads(
        *(
            torch.randn(shape, generator=generator).to(dtype)
            for shape, dtype in zip(shapes, dtypes, strict=False)
        )
    )


def clone(parameters: list[torch.Tensor]) -> list[torch.Tensor]:
    return parameters_with_grads(*(p.grad for p in parameters))


def test_total_norm_of_literal_gradients():
    # sqrt(3^2 + 4^2) = 5 and sqrt(1 + 4 + 4 + 16) = 5 taken together: sqrt(25 + 25).
    parameters = parameters_with_grads(torch.tensor([3.0, 4.0]), torch.tensor([[1.0, 2.0], [2.0, 4.0]]))
    norm = total_grad_norm(parameters)
    assert norm.dtype == torch.float32 and norm.dim() == 0
    assert norm.item() == pytest.approx(50**0.5, rel=1e-7)
    assert total_grad_norm(parameters_with_grads(torch.tensor([3.0, 4.0]))).item() == pytest.approx(5.0)
    assert total_grad_norm(parameters_with_grads(torch.tensor([-2.0]))).item() == pytest.approx(2.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_total_norm_matches_torch(seed: int):
    parameters = random_parameters(seed)
    expected = torch.nn.utils.get_total_norm([p.grad for p in parameters])
    torch.testing.assert_close(total_grad_norm(parameters), expected, rtol=1e-6, atol=0)
    # And clip_grad_norm_ with no effective limit returns the same norm as torch's.
    expected = torch.nn.utils.clip_grad_norm_(clone(parameters), max_norm=1e9)
    torch.testing.assert_close(clip_grad_norm_(parameters, max_norm=1e9), expected, rtol=1e-6, atol=0)


def test_parameters_without_gradients_are_skipped():
    parameters = parameters_with_grads(None, torch.tensor([3.0, 4.0]), None)
    assert total_grad_norm(parameters).item() == pytest.approx(5.0)
    assert total_grad_norm(parameters_with_grads(None, None)) is None
    assert total_grad_norm([]) is None
    assert clip_grad_norm_(parameters_with_grads(None), max_norm=1.0) is None


def test_a_generator_of_parameters_is_read_once():
    parameters = parameters_with_grads(torch.tensor([3.0, 4.0]))
    norm = clip_grad_norm_(iter(parameters), max_norm=1.0)
    assert norm.item() == pytest.approx(5.0)
    # The gradients were scaled too, though the iterator was consumed computing the norm.
    assert parameters[0].grad.tolist() == pytest.approx([0.6, 0.8], rel=1e-5)


def test_clipping_scales_by_max_norm_over_norm_plus_epsilon():
    parameters = parameters_with_grads(torch.tensor([3.0, 4.0]), torch.tensor([0.0]))
    norm = clip_grad_norm_(parameters, max_norm=1.0)
    assert norm.item() == pytest.approx(5.0)  # the norm before clipping
    coefficient = 1.0 / (5.0 + 1e-6)
    assert parameters[0].grad.tolist() == pytest.approx([3.0 * coefficient, 4.0 * coefficient], rel=1e-7)
    assert parameters[1].grad.tolist() == [0.0]
    assert total_grad_norm(parameters).item() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("max_norm", [5.0, 7.5, 1e6])
def test_gradients_at_or_under_the_limit_are_left_alone(max_norm: float):
    parameters = parameters_with_grads(torch.tensor([3.0, 4.0]))
    clip_grad_norm_(parameters, max_norm=max_norm)
    # At max_norm == norm the coefficient is 5 / (5 + 1e-6): a rounding error's worth under 1.
    assert parameters[0].grad.tolist() == pytest.approx([3.0, 4.0], rel=1e-6)


@pytest.mark.parametrize(("seed", "max_norm"), [(0, 0.5), (1, 2.0), (2, 1e-3)])
def test_clipping_matches_torch(seed: int, max_norm: float):
    parameters = random_parameters(seed)
    reference = clone(parameters)
    expected_norm = torch.nn.utils.clip_grad_norm_(reference, max_norm=max_norm)
    norm = clip_grad_norm_(parameters, max_norm=max_norm)
    torch.testing.assert_close(norm, expected_norm, rtol=1e-6, atol=0)
    for parameter, expected in zip(parameters, reference, strict=True):
        torch.testing.assert_close(parameter.grad, expected.grad, rtol=1e-6, atol=0)
    assert total_grad_norm(parameters).item() == pytest.approx(max_norm, rel=1e-5)


def test_clipping_mixed_dtypes_matches_torch_and_keeps_dtypes():
    dtypes = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
    parameters = random_parameters(3, dtypes)
    reference = clone(parameters)
    expected_norm = torch.nn.utils.clip_grad_norm_(reference, max_norm=0.25, foreach=False)
    norm = clip_grad_norm_(parameters, max_norm=0.25)
    assert norm.dtype == torch.float32
    torch.testing.assert_close(norm, expected_norm.float(), rtol=1e-3, atol=0)
    for parameter, expected, dtype in zip(parameters, reference, dtypes, strict=True):
        assert parameter.grad.dtype == dtype
        torch.testing.assert_close(parameter.grad, expected.grad)


def test_norm_of_low_precision_gradients_is_float32():
    # The norm comes back as float32 whatever the gradients' dtype (sqrt(4 * 300^2) = 600).
    parameters = parameters_with_grads(torch.full((4,), 300.0, dtype=torch.bfloat16))
    norm = total_grad_norm(parameters)
    assert norm.dtype == torch.float32 and norm.item() == pytest.approx(600.0)


@pytest.fixture
def one_process_group():
    """A gloo process group of world size 1, for DTensors in this process."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_dtensors_on_two_meshes_and_plain_tensors(one_process_group):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    # As under FSDP2 + tensor parallelism: some parameters sharded over (dp, tp), some over dp only.
    dp = init_device_mesh("cpu", (1,), mesh_dim_names=("dp",))
    dp_tp = init_device_mesh("cpu", (1, 1), mesh_dim_names=("dp", "tp"))
    values = [torch.full((4, 3), 1.0), torch.full((2, 2), 2.0), torch.tensor([1.0, 2.0, 2.0])]
    grads = [
        distribute_tensor(values[0], dp, [Shard(0)]),
        distribute_tensor(values[1], dp_tp, [Shard(0), Shard(1)]),
        values[2].clone(),
    ]
    parameters = []
    for grad in grads:
        parameter = torch.nn.Parameter(torch.zeros_like(grad))
        parameter.grad = grad
        parameters.append(parameter)
    with pytest.raises(RuntimeError):  # what the module exists for: torch cannot mix them
        torch.nn.utils.get_total_norm(grads)

    expected = 37**0.5  # sqrt(12 * 1 + 4 * 4 + (1 + 4 + 4))
    norm = total_grad_norm(parameters)
    assert not isinstance(norm, DTensor) and norm.item() == pytest.approx(expected, rel=1e-6)
    assert clip_grad_norm_(parameters, max_norm=1.0).item() == pytest.approx(expected, rel=1e-6)
    coefficient = 1.0 / (expected + 1e-6)
    for parameter, value in zip(parameters, values, strict=True):
        assert isinstance(parameter.grad, DTensor) == (parameter is not parameters[2])
        local = parameter.grad.full_tensor() if isinstance(parameter.grad, DTensor) else parameter.grad
        torch.testing.assert_close(local, value * coefficient, rtol=1e-6, atol=0)
