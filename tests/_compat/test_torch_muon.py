"""The private names of torch's Muon in lit_pretrain/_compat/torch_muon.py still exist and mean what they meant."""

from __future__ import annotations

import inspect

import torch
import torch.optim._muon as torch_muon_module
from torch.optim import Muon

from lit_pretrain._compat import torch_muon as compat


def broken(what: str) -> str:
    return (
        f"torch {torch.__version__} changed {what} (lit_pretrain/_compat/torch_muon.py was checked against "
        f"{compat.CHECKED_AGAINST}): update that module, then CHECKED_AGAINST"
    )


def test_newton_schulz_and_the_lr_adjustment_are_what_torch_muon_steps_with():
    source = inspect.getsource(torch_muon_module)
    assert "_zeropower_via_newtonschulz(" in source and "_adjust_lr(" in source, broken("Muon's step")
    assert list(inspect.signature(compat.zeropower_via_newtonschulz).parameters)[:2] == [
        "grad",
        "ns_coefficients",
    ], broken("_zeropower_via_newtonschulz's parameters")
    assert callable(getattr(Muon, "_init_group", None)), broken("Muon._init_group (optim/muon.py calls it)")


def test_newton_schulz_orthogonalises():
    matrix = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    result = compat.zeropower_via_newtonschulz(matrix, (3.4445, -4.7750, 2.0315), 5, 1e-7).float()
    singular_values = torch.linalg.svdvals(result)
    # Five quintic steps in bfloat16 bring every singular value near 1 (not exactly: Keller Jordan's design).
    assert singular_values.min() > 0.5 and singular_values.max() < 1.3
