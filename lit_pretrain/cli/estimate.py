"""`lit-pretrain estimate`: memory, FLOPs and time of a `fit` run, read with `fit`'s own parser.

`EstimateCLI` is `PretrainCLI` that parses and stops: the same defaults, `--config` files (later files
win) and dotted overrides as `fit`, plus the options of this command (--gpu, --mfu, --devices,
--max_tokens). Nothing is instantiated, so no GPU, data or model is needed. The numbers come from
`lit_pretrain.experiments.estimate`.
"""

from __future__ import annotations

import importlib
from typing import Any

from jsonargparse.typing import PositiveInt
from lightning.pytorch.cli import LightningArgumentParser
from lightning.pytorch.strategies import (
    DDPStrategy,
    DeepSpeedStrategy,
    FSDPStrategy,
    ModelParallelStrategy,
    SingleDeviceStrategy,
    SingleDeviceXLAStrategy,
    StrategyRegistry,
    XLAStrategy,
)

from lit_pretrain.cli.fit import PretrainCLI, fill_seq_len, run_lightning_cli
from lit_pretrain.experiments.estimate import Estimate, estimate, format_estimate
from lit_pretrain.model import ModelConfig
from lit_pretrain.parallel.devices import DEVICES
from lit_pretrain.parallel.layout import resolve_parallel_sizes
from lit_pretrain.training.budget import TokenCount


class EstimateCLI(PretrainCLI):
    """`PretrainCLI`'s parser, run without a subcommand (`run=False`), that instantiates nothing.

    `config` holds the composed namespace (defaults, every --config file, every override).
    """

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """`fit`'s extra options, plus this command's own."""
        super().add_arguments_to_parser(parser)
        group = parser.add_argument_group("Estimate", "Options of `lit-pretrain estimate` only.")
        group.add_argument(
            "--gpu",
            type=str,
            default="h100-sxm",
            help=f"the device: {', '.join(DEVICES)}, or a name such as 'NVIDIA H100 80GB HBM3'",
        )
        group.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation to assume")
        group.add_argument(
            "--devices",
            type=PositiveInt | None,
            default=None,
            help="devices per node, when trainer.devices does not say (-1, auto); as --trainer.devices N",
        )
        group.add_argument(
            "--max_tokens",
            type=TokenCount | None,
            default=None,
            help="token budget, e.g. 3e12 (default: model.max_tokens)",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse `args` (LightningCLI's own version warns whenever args are passed while sys.argv has
        arguments, which is always the case here: `lit-pretrain estimate` hands over what follows the
        command's name)."""
        self.config = parser.parse_args(args)

    def before_instantiate_classes(self) -> None:
        """Only what decides the numbers: seq_len (no directories or logger are needed)."""
        fill_seq_len(self.config)

    def instantiate_classes(self) -> None:
        """Build nothing: no trainer, model or data."""


def parse(argv: list[str]) -> EstimateCLI:
    """`argv` (what follows `lit-pretrain estimate`) parsed as `fit` parses it, plus the estimate options."""
    return run_lightning_cli(argv, cli_class=EstimateCLI, run=False, prog="lit-pretrain estimate")


def devices_per_node(devices: Any) -> int:
    """`trainer.devices` as a count: N, "N", a list of indices or "0,1,..."; -1 and "auto" need --devices."""
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        return devices
    if isinstance(devices, list | tuple) and devices:
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([index for index in devices.split(",") if index.strip()])
    raise ValueError(f"trainer.devices is {devices!r}: pass --devices N (devices per node)")


def strategy_layout(strategy: Any, num_nodes: int, devices: int) -> tuple[str, int, int]:
    """(kind, data_parallel_size, tensor_parallel_size) of `trainer.strategy`; kinds as in `estimate`.

    "auto" is what Lightning picks: one device alone, DDP on more devices or nodes.
    """
    world = num_nodes * devices
    if strategy in (None, "auto"):
        return ("single", 1, 1) if world == 1 else ("ddp", world, 1)
    init_args: Any = {}
    if isinstance(strategy, str):
        if strategy not in StrategyRegistry or "offload" in strategy:
            raise ValueError(f"estimate does not model strategy {strategy!r}")
        name, strategy_class = strategy, StrategyRegistry[strategy]["strategy"]
    else:
        name = strategy["class_path"]
        module, _, class_name = name.rpartition(".")
        strategy_class = getattr(importlib.import_module(module), class_name)
        init_args = strategy.get("init_args") or {}
    if issubclass(strategy_class, DeepSpeedStrategy | XLAStrategy | SingleDeviceXLAStrategy):
        raise ValueError(f"estimate does not model strategy {name!r}")  # (subclasses of the ones below)
    if issubclass(strategy_class, ModelParallelStrategy):
        data, tensor = resolve_parallel_sizes(
            init_args.get("data_parallel_size", "auto"),
            init_args.get("tensor_parallel_size", "auto"),
            num_nodes,
            devices,
        )
        return "fsdp2", data, tensor
    if issubclass(strategy_class, FSDPStrategy):
        return "fsdp", world, 1
    if issubclass(strategy_class, DDPStrategy):
        return "ddp", world, 1
    if issubclass(strategy_class, SingleDeviceStrategy):
        if world != 1:
            raise ValueError(f"strategy {name!r} runs on one device, not {world}")
        return "single", 1, 1
    raise ValueError(f"estimate does not model strategy {name!r}")


def estimate_from_config(cli: EstimateCLI) -> Estimate:
    """The estimate of the run `cli` parsed."""
    config = cli.config
    model_section, data, trainer = config.model, config.data, config.trainer
    model = ModelConfig.from_name(model_section.model_name, **(model_section.model_overrides or {}))
    seq_len = data.seq_len  # filled from the model's block_size when no config or flag sets it
    devices = config.devices or devices_per_node(trainer.devices)
    num_nodes = trainer.num_nodes or 1
    strategy, data_parallel, tensor_parallel = strategy_layout(trainer.strategy, num_nodes, devices)
    parallel = model_section.parallel or {}
    result = estimate(
        model,
        seq_len=seq_len,
        micro_batch_size=data.micro_batch_size,
        global_batch_size=data.global_batch_size,
        accumulate_grad_batches=trainer.accumulate_grad_batches or 1,
        precision=str(trainer.precision or "32-true"),
        strategy=strategy,
        data_parallel_size=data_parallel,
        tensor_parallel_size=tensor_parallel,
        fsdp_param_dtype=parallel.get("fsdp_param_dtype"),
        float8=bool(parallel.get("float8", False)),
        activation_checkpointing_every=parallel.get("activation_checkpointing_every", 0) or 0,
        device=config.gpu,
        mfu=config.mfu,
        max_tokens=int(config.max_tokens) if config.max_tokens else model_section.max_tokens,
    )
    return result


def main(argv: list[str]) -> None:
    """Parse `argv` as `fit` would and print the estimate (a bad value raises ValueError, which
    `lit-pretrain` reports as one line)."""
    print(format_estimate(estimate_from_config(parse(argv))))
