"""Muon + AdamW as one optimizer: torch's Muon arithmetic, who gets which parameter, one schedule for
both, and a state that saves, loads and skips like AdamW's."""

from __future__ import annotations

import copy

import pytest
import torch

from lit_pretrain.model import GPT, ModelConfig
from lit_pretrain.optim.adamw import AdamWConfig
from lit_pretrain.optim.muon import Muon, MuonConfig, build_muon_adamw, muon_parameters
from tests.helpers.models import TEST_MODEL_OVERRIDES

SCHEDULE = AdamWConfig(learning_rate=1e-3, min_lr=1e-4, warmup_steps=2, weight_decay=0.1)


def test_muon_steps_exactly_as_torch_muon():
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(shape)) for shape in ((8, 5), (5, 8), (6, 6))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a = Muon(ours, lr=0.02, momentum=0.9, weight_decay=0.1)
    b = torch.optim.Muon(theirs, lr=0.02, momentum=0.9, weight_decay=0.1)
    for _ in range(3):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn(p.shape)
            q.grad = p.grad.clone()
        a.step()
        b.step()
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs, strict=True))


def test_muon_update_is_orthogonalised():
    # No momentum or decay: the update is Newton-Schulz(gradient), whose singular values Keller Jordan's
    # coefficients put near 1 (between about 0.5 and 1.5), whatever the gradient's spread.
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.zeros(16, 32))
    left, _ = torch.linalg.qr(torch.randn(16, 16))
    right, _ = torch.linalg.qr(torch.randn(32, 16))
    weight.grad = left @ torch.diag(torch.logspace(-2, 0, 16)) @ right.T  # singular values 0.01 to 1
    Muon([weight], lr=1.0, momentum=0.0, weight_decay=0.0).step()
    gradient_spread = torch.linalg.svdvals(weight.grad)
    update = torch.linalg.svdvals(weight.detach())
    assert gradient_spread.max() / gradient_spread.min() > 99
    assert update.min() > 0.5 and update.max() < 1.5


def model() -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig.from_name("tiny", **TEST_MODEL_OVERRIDES))


def test_muon_gets_the_blocks_matrices_and_adamw_the_rest():
    gpt = model()
    optimizer, _ = build_muon_adamw(gpt, SCHEDULE, MuonConfig(lr=0.02), decay_steps=10)
    decayed, plain, muon = optimizer.param_groups
    names = {id(p): name for name, p in gpt.named_parameters()}
    assert sorted(names[id(p)] for p in muon["params"]) == sorted(
        name for name, p in gpt.named_parameters() if name.startswith("blocks.") and p.ndim == 2
    )
    assert [names[id(p)] for p in decayed["params"]] == ["wte.weight"], "the (tied) embedding and lm head"
    assert {names[id(p)].rsplit(".", 2)[-2] for p in plain["params"]} == {"norm_1", "norm_2", "norm_f"}
    assert muon["weight_decay"] == decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert muon["momentum"] == 0.95 and "betas" in decayed and "betas" not in muon
    assert len(muon_parameters(gpt)) == 7 * 2


def test_one_schedule_scales_both_base_rates():
    optimizer, scheduler = build_muon_adamw(model(), SCHEDULE, MuonConfig(lr=0.02), decay_steps=10)
    rates = []
    for _ in range(4):
        rates.extend(group["lr"] for group in optimizer.param_groups)
        optimizer.step()
        scheduler.step()
    multipliers = [SCHEDULE.lr_at(step, 10) / 1e-3 for step in range(4)]  # 0.5, 1, then the cosine
    expected = [rate * m for m in multipliers for rate in (1e-3, 1e-3, 0.02)]
    assert rates == pytest.approx(expected, rel=1e-12)


def train(optimizer, gpt: GPT, steps: range) -> None:
    for step in steps:
        tokens = torch.randint(0, 512, (2, 17), generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        gpt(tokens[:, :-1]).logsumexp(-1).mean().backward()
        optimizer.step()


def test_state_dict_round_trip_continues_exactly():
    straight = model()
    optimizer, _ = build_muon_adamw(straight, SCHEDULE, MuonConfig(), decay_steps=10)
    train(optimizer, straight, range(4))

    resumed = model()
    first, _ = build_muon_adamw(resumed, SCHEDULE, MuonConfig(), decay_steps=10)
    train(first, resumed, range(2))
    saved = copy.deepcopy(first.state_dict())
    second, _ = build_muon_adamw(resumed, SCHEDULE, MuonConfig(), decay_steps=10)
    second.load_state_dict(saved)
    assert {"momentum_buffer"} in [set(s) for s in second.state.values()], "Muon's state came back"
    train(second, resumed, range(2, 4))
    for (name, a), b in zip(straight.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_parameters_without_gradients_are_left_alone():
    # LossGuard skips a step by dropping every gradient: neither part may move a weight or a moment.
    gpt = model()
    optimizer, _ = build_muon_adamw(gpt, SCHEDULE, MuonConfig(), decay_steps=10)
    train(optimizer, gpt, range(1))
    weights = copy.deepcopy(gpt.state_dict())
    state = copy.deepcopy(optimizer.state_dict()["state"])
    optimizer.zero_grad(set_to_none=True)
    optimizer.step()
    assert all(torch.equal(weights[k], v) for k, v in gpt.state_dict().items())
    after = optimizer.state_dict()["state"]
    assert all(
        torch.equal(torch.as_tensor(v), torch.as_tensor(after[i][k]))
        for i in state
        for k, v in state[i].items()
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"lr": -1.0}, "--model.muon_lr must be 0 or more"),
        ({"momentum": 1.0}, r"--model.muon_momentum must be in \[0, 1\)"),
    ],
)
def test_muon_settings_are_validated(settings: dict, message: str):
    with pytest.raises(ValueError, match=message):
        MuonConfig(**settings)
