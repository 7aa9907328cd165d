"""Data- and tensor-parallel sizes of a run: resolving "auto" and checking that the model can be split.

One rule for everything that needs the layout (the strategy, `parallelize`, `lit-pretrain estimate`):
- both sizes "auto": tensor parallelism over the devices of a node, data parallelism across the nodes
  (what Lightning's `ModelParallelStrategy` does);
- one size "auto": the world size (devices x nodes) divided by the other size (Lightning alone would set
  an "auto" data-parallel size to the number of nodes whatever the tensor-parallel size);
- data_parallel x tensor_parallel must equal the world size.
"""

from __future__ import annotations

from lit_pretrain.model import ModelConfig


def _size(name: str, value: int | str) -> int | None:
    """`value` as a positive int, or None for "auto"."""
    if value == "auto":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{name} must be a positive int or "auto", got {value!r}')
    return value


def resolve_parallel_sizes(
    data_parallel: int | str, tensor_parallel: int | str, num_nodes: int, devices_per_node: int
) -> tuple[int, int]:
    """(data_parallel_size, tensor_parallel_size) for `num_nodes` nodes of `devices_per_node` devices."""
    for name, value in (("num_nodes", num_nodes), ("devices per node", devices_per_node)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    world = num_nodes * devices_per_node
    where = f"devices x num_nodes = {devices_per_node} x {num_nodes} = {world}"
    data, tensor = _size("data_parallel_size", data_parallel), _size("tensor_parallel_size", tensor_parallel)
    if data is None and tensor is None:
        data, tensor = num_nodes, devices_per_node
    elif data is None:
        if world % tensor:
            raise ValueError(f"tensor_parallel_size {tensor} must divide {where}")
        data = world // tensor
    elif tensor is None:
        if world % data:
            raise ValueError(f"data_parallel_size {data} must divide {where}")
        tensor = world // data
    if data * tensor != world:
        raise ValueError(
            f"data_parallel_size {data} x tensor_parallel_size {tensor} = {data * tensor} must equal {where}"
        )
    return data, tensor


def check_tensor_parallel_divides(config: ModelConfig, tensor_parallel_size: int) -> None:
    """Raise if `tensor_parallel_size` does not divide the heads, the KV heads and the MLP width.

    Tensor parallelism gives each rank whole heads and an equal share of the MLP's columns; the error
    names every field that cannot be split.
    """
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be positive, got {tensor_parallel_size}")
    fields = ("n_head", "n_kv_head", "intermediate_size")
    bad = [
        f"{name} ({getattr(config, name)})" for name in fields if getattr(config, name) % tensor_parallel_size
    ]
    if bad:
        listed = bad[0] if len(bad) == 1 else ", ".join(bad[:-1]) + " and " + bad[-1]
        raise ValueError(f"tensor_parallel_size {tensor_parallel_size} must divide the model's {listed}")
