"""Peak dense FLOP/s of accelerators per precision, for run estimates and model FLOPs utilisation (MFU).

`peak_flops("h100-sxm", "bf16")` or `peak_flops(torch.cuda.get_device_name(), "bf16-mixed")`: a table
key or the name the driver reports, and a precision key (fp32, tf32, bf16, fp16, fp8) or a Lightning
precision string. Every number is the vendor's dense figure (no 2:4 structured sparsity); where a
datasheet gives only the with-sparsity figure, the table holds half of it. Unknown devices give None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The precision of the matmuls: fp32 (CUDA cores, no TF32), tf32, bf16, fp16 and fp8 (tensor cores).
PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "fp8")
# Words in a device name that tell one form factor of a chip from another; without one, the SXM (or
# OAM) part is meant: "NVIDIA H100 80GB HBM3" is the H100 SXM, "NVIDIA H100 PCIe" the PCIe card.
_VARIANTS = ("pcie", "nvl")


@dataclass(frozen=True)
class Device:
    """One accelerator: its table key, the chip and form factor that identify it, its dense peaks."""

    key: str
    name: str
    chip: str  # the word that names the chip in torch.cuda.get_device_name(), lower case
    variant: str | None  # one of _VARIANTS, or None for the SXM / OAM part
    peak_tflops: dict[str, float]  # precision -> dense TFLOP/s

    def peak_flops(self, precision: str) -> float | None:
        """Dense peak FLOP/s at `precision` (a key of PRECISIONS), or None if the device has no such units."""
        tflops = self.peak_tflops.get(precision)
        return None if tflops is None else tflops * 1e12


def _device(key: str, name: str, chip: str, variant: str | None, **peaks: float) -> Device:
    return Device(key, name, chip, variant, dict(peaks))


DEVICES: dict[str, Device] = {
    device.key: device
    for device in (
        # NVIDIA A100 datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4, SXM and PCIe columns):
        # FP32 19.5, TF32 156, BF16 312, FP16 312 TFLOPS dense (312 / 624 / 624 with sparsity); no FP8.
        _device("a100", "NVIDIA A100 SXM", "a100", None, fp32=19.5, tf32=156, bf16=312, fp16=312),
        _device("a100-pcie", "NVIDIA A100 PCIe", "a100", "pcie", fp32=19.5, tf32=156, bf16=312, fp16=312),
        # NVIDIA A10 datasheet: FP32 31.2, TF32 62.5, BF16 125, FP16 125 TFLOPS dense; no FP8.
        _device("a10", "NVIDIA A10", "a10", None, fp32=31.2, tf32=62.5, bf16=125, fp16=125),
        # A10G: AWS's GA102 part (EC2 G5). NVIDIA publishes no datasheet for it; the A10 datasheet's figures
        # are used, an approximation (the A10G's FP32 peak at its 1710 MHz boost is 31.5 TFLOPS).
        _device("a10g", "NVIDIA A10G", "a10g", None, fp32=31.2, tf32=62.5, bf16=125, fp16=125),
        # NVIDIA H100 datasheet, H100 SXM: FP32 67; with sparsity TF32 989, BF16 1,979, FP16 1,979,
        # FP8 3,958 TFLOPS.
        _device(
            "h100-sxm", "NVIDIA H100 SXM", "h100", None, fp32=67, tf32=494.5, bf16=989.5, fp16=989.5, fp8=1979
        ),
        # NVIDIA H100 PCIe datasheet: FP32 51; with sparsity TF32 756, BF16 1,513, FP16 1,513, FP8 3,026.
        _device(
            "h100-pcie",
            "NVIDIA H100 PCIe",
            "h100",
            "pcie",
            fp32=51,
            tf32=378,
            bf16=756.5,
            fp16=756.5,
            fp8=1513,
        ),
        # NVIDIA H100 datasheet, H100 NVL: FP32 60; with sparsity TF32 835, BF16 1,671, FP16 1,671,
        # FP8 3,341 TFLOPS.
        _device(
            "h100-nvl",
            "NVIDIA H100 NVL",
            "h100",
            "nvl",
            fp32=60,
            tf32=417.5,
            bf16=835.5,
            fp16=835.5,
            fp8=1670.5,
        ),
        # NVIDIA H200 datasheet, H200 SXM: FP32 67; with sparsity TF32 989, BF16 1,979, FP16 1,979,
        # FP8 3,958 TFLOPS (the H100 SXM's compute, more and faster memory).
        _device(
            "h200", "NVIDIA H200 SXM", "h200", None, fp32=67, tf32=494.5, bf16=989.5, fp16=989.5, fp8=1979
        ),
        # NVIDIA H200 datasheet, H200 NVL: FP32 60; with sparsity TF32 835, BF16 1,671, FP16 1,671,
        # FP8 3,341 TFLOPS.
        _device(
            "h200-nvl",
            "NVIDIA H200 NVL",
            "h200",
            "nvl",
            fp32=60,
            tf32=417.5,
            bf16=835.5,
            fp16=835.5,
            fp8=1670.5,
        ),
        # NVIDIA HGX B200 specifications, 8 GPUs: FP32 600 TFLOPS; with sparsity TF32 18, FP16/BF16 36,
        # FP8 72 PFLOPS. Per GPU, dense: FP32 75, TF32 1,125, BF16 2,250, FP8 4,500 TFLOPS.
        _device("b200", "NVIDIA B200", "b200", None, fp32=75, tf32=1125, bf16=2250, fp16=2250, fp8=4500),
        # NVIDIA L4 datasheet: FP32 30.3; with sparsity TF32 120, BF16 242, FP16 242, FP8 485 TFLOPS.
        _device("l4", "NVIDIA L4", "l4", None, fp32=30.3, tf32=60, bf16=121, fp16=121, fp8=242.5),
        # NVIDIA L40S datasheet: FP32 91.6, TF32 183, BF16 362.05, FP16 362.05, FP8 733 TFLOPS dense
        # (366 / 733 / 733 / 1,466 with sparsity).
        _device("l40s", "NVIDIA L40S", "l40s", None, fp32=91.6, tf32=183, bf16=362.05, fp16=362.05, fp8=733),
        # AMD Instinct MI300X datasheet: FP32 (matrix) 163.4, TF32 653.7, BF16 1,307.4, FP16 1,307.4,
        # FP8 2,614.9 TFLOPS dense (twice that with sparsity).
        _device(
            "mi300x",
            "AMD Instinct MI300X",
            "mi300x",
            None,
            fp32=163.4,
            tf32=653.7,
            bf16=1307.4,
            fp16=1307.4,
            fp8=2614.9,
        ),
    )
}


def find_device(name: str) -> Device | None:
    """The device that `name` means: a table key ("h100-sxm") or a driver's name ("NVIDIA H100 80GB HBM3").

    Names are compared word by word, so "NVIDIA L40S" is not the L4 and "NVIDIA GH200 480GB" is not the
    H200; a name that matches no row, or more than one, gives None.
    """
    if name.strip().lower() in DEVICES:
        return DEVICES[name.strip().lower()]
    words = set(re.split(r"[^a-z0-9]+", name.lower()))
    matches = [
        device
        for device in DEVICES.values()
        if device.chip in words
        and (device.variant in words if device.variant else not words.intersection(_VARIANTS))
    ]
    return matches[0] if len(matches) == 1 else None


def compute_precision(
    precision: str | int,
    fsdp_param_dtype: str | None = None,
    float8: bool = False,
    float32_matmul_precision: str = "highest",
) -> str:
    """The precision key (see PRECISIONS) of a run's matmuls.

    `precision` is Lightning's (`trainer.precision`: "bf16-mixed", "16-true", "32-true", 32, ...).
    `fsdp_param_dtype` is FSDP2's mixed-precision compute dtype, which wins under FSDP2 (trainer/fsdp2.yaml
    computes in bf16 with Lightning's precision at 32-true); `float8` means float8 linear layers.
    `float32_matmul_precision` is `torch.get_float32_matmul_precision()`: fp32 matmuls use TF32 unless
    it is "highest" (PyTorch's default).
    """
    if float8:
        return "fp8"
    dtypes = {"bfloat16": "bf16", "float16": "fp16", "float32": None}
    if fsdp_param_dtype is not None:
        if fsdp_param_dtype not in dtypes:
            raise ValueError(f"unknown fsdp_param_dtype {fsdp_param_dtype!r}; known: {sorted(dtypes)}")
        if dtypes[fsdp_param_dtype]:
            return dtypes[fsdp_param_dtype]
    name = str(precision).lower()
    if name.startswith("transformer-engine"):
        return "fp8"
    if name in ("bf16", "bf16-mixed", "bf16-true"):
        return "bf16"
    if name in ("16", "16-mixed", "16-true"):
        return "fp16"
    if name in ("32", "32-true"):
        return "fp32" if float32_matmul_precision == "highest" else "tf32"
    raise ValueError(
        f"no peak FLOP/s for precision {precision!r}: use one of {', '.join(PRECISIONS)} or a Lightning "
        "precision (32-true, 16-mixed, bf16-mixed, 16-true, bf16-true)"
    )


def peak_flops(device_name_or_key: str, precision: str) -> float | None:
    """Dense peak FLOP/s of one device at `precision`; None for an unknown device or one without such units.

    `device_name_or_key`: a key of DEVICES or a name as `torch.cuda.get_device_name()` reports it.
    `precision`: a key of PRECISIONS or a Lightning precision string (its matmul precision is used, see
    `compute_precision`).
    """
    key = precision if precision in PRECISIONS else compute_precision(precision)
    device = find_device(device_name_or_key)
    return None if device is None else device.peak_flops(key)
