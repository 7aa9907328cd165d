"""tests/helpers/scripts/distributed_run.py with extra `LitPretrain` settings (JSON in $MODULE_SETTINGS),
e.g. Muon: the same fixed data, strategies and record, plus the optimizer's class name. Lightning re-runs
this script for the other ranks, which inherit the environment and so the settings.

With $MUON_NS_FLOAT32 set, Muon's Newton-Schulz runs in float32 instead of torch's bfloat16, so that a
comparison across strategies sees the sharding alone: in bfloat16 the float32 summation-order differences
of the gradients (reduce-scatter against one process) can round to neighbouring bfloat16 values.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lit_pretrain.optim import muon  # noqa: E402
from tests.helpers.scripts import distributed_run  # noqa: E402

SETTINGS = json.loads(os.environ.get("MODULE_SETTINGS", "{}"))


def newton_schulz_float32(
    grad: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float
) -> torch.Tensor:
    """torch.optim._muon._zeropower_via_newtonschulz in float32."""
    a, b, c = coefficients
    tall = grad.size(0) > grad.size(1)
    x = grad.float().T if tall else grad.float()
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class ConfiguredRun(distributed_run.RecordingLitPretrain):
    """The recording module, built with the settings on top of the script's own."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**{**kwargs, **SETTINGS})

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            output = Path(sys.argv[sys.argv.index("--output") + 1]).with_suffix(".optimizer.txt")
            output.write_text(type(self.optimizers().optimizer).__name__)


if __name__ == "__main__":
    if os.environ.get("MUON_NS_FLOAT32"):
        muon._zeropower_via_newtonschulz = newton_schulz_float32
    distributed_run.RecordingLitPretrain = ConfiguredRun
    distributed_run.main()
