"""`peak_flops`: dense peaks per device and precision, found by table key or by the driver's name."""

from __future__ import annotations

import pytest

from lit_pretrain.parallel.devices import DEVICES, PRECISIONS, compute_precision, find_device, peak_flops


@pytest.mark.parametrize(
    ("name", "key"),
    [
        # torch.cuda.get_device_name() strings
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA H200 NVL", "h200-nvl"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA A100-SXM4-40GB", "a100"),
        ("NVIDIA A100-PCIE-40GB", "a100-pcie"),
        ("NVIDIA A100 80GB PCIe", "a100-pcie"),
        ("NVIDIA B200", "b200"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA A10G", "a10g"),
        ("NVIDIA A10", "a10"),
        ("AMD Instinct MI300X", "mi300x"),
        # keys and short forms
        ("h100-sxm", "h100-sxm"),
        ("H100", "h100-sxm"),
        ("a100-sxm", "a100"),
        ("mi300x", "mi300x"),
    ],
)
def test_names_find_their_device(name: str, key: str):
    device = find_device(name)
    assert device is not None and device.key == key


@pytest.mark.parametrize("name", ["NVIDIA GH200 480GB", "NVIDIA L40", "Tesla T4", "NVIDIA H800", "cpu", ""])
def test_unknown_devices_have_no_peak(name: str):
    assert find_device(name) is None
    assert peak_flops(name, "bf16") is None


def test_every_key_finds_its_own_row():
    assert all(find_device(key) is DEVICES[key] for key in DEVICES)
    assert {"a100", "h100-sxm", "h100-pcie", "h200", "b200", "l4", "a10g", "mi300x", "l40s"} <= set(DEVICES)


def test_peaks_depend_on_the_precision():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989.5e12
    assert peak_flops("h100-sxm", "fp16") == 989.5e12
    assert peak_flops("h100-sxm", "tf32") == 494.5e12
    assert peak_flops("h100-sxm", "fp32") == 67e12
    assert peak_flops("h100-sxm", "fp8") == 1979e12
    assert peak_flops("a100", "bf16") == 312e12 and peak_flops("a100", "tf32") == 156e12
    assert peak_flops("a100", "fp8") is None, "no fp8 units before Hopper / Ada"
    assert peak_flops("l40s", "bf16") == pytest.approx(362.05e12)
    assert peak_flops("mi300x", "bf16") == pytest.approx(1307.4e12)
    # Lightning precision strings mean their matmul precision.
    assert peak_flops("h100-sxm", "bf16-mixed") == 989.5e12
    assert peak_flops("h100-sxm", "32-true") == 67e12
    with pytest.raises(ValueError, match="no peak FLOP/s for precision 'int4'"):
        peak_flops("h100-sxm", "int4")


def test_the_table_is_consistent():
    """Typos show up as a peak out of line: fp32 <= tf32 = bf16 / 2, bf16 == fp16, fp8 = 2 x bf16 (to 2%:
    the L40S datasheet rounds its TF32 and FP8 figures)."""
    for device in DEVICES.values():
        peaks = device.peak_tflops
        assert set(peaks) <= set(PRECISIONS) and {"fp32", "tf32", "bf16", "fp16"} <= set(peaks), device.key
        assert peaks["fp32"] <= peaks["tf32"] < peaks["bf16"] == peaks["fp16"], device.key
        assert peaks["tf32"] == pytest.approx(peaks["bf16"] / 2, rel=0.02), device.key
        if "fp8" in peaks:
            assert peaks["fp8"] == pytest.approx(2 * peaks["bf16"], rel=0.02), device.key


def test_compute_precision_of_a_run():
    assert compute_precision("bf16-mixed") == "bf16"
    assert compute_precision("bf16-true") == "bf16"
    assert compute_precision("16-mixed") == "fp16"
    assert compute_precision(32) == "fp32"
    assert compute_precision("32-true", float32_matmul_precision="high") == "tf32"
    assert compute_precision("32-true", fsdp_param_dtype="bfloat16") == "bf16"
    assert compute_precision("32-true", fsdp_param_dtype="float32") == "fp32"
    assert compute_precision("bf16-mixed", float8=True) == "fp8"
    assert compute_precision("transformer-engine") == "fp8"
    with pytest.raises(ValueError, match="no peak FLOP/s for precision '64-true'"):
        compute_precision("64-true")
