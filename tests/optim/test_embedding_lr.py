"""--model.embedding_lr: the token embedding (and a tied head) trains at its own rate, on the same schedule."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from lit_pretrain.model import GPT, ModelConfig
from lit_pretrain.optim.adamw import AdamWConfig, build_adamw
from lit_pretrain.optim.muon import MuonConfig, build_muon_adamw
from tests.helpers.models import TEST_MODEL_OVERRIDES

SCHEDULE = AdamWConfig(learning_rate=1e-3, min_lr=1e-4, warmup_steps=2, weight_decay=0.1, embedding_lr=0.05)


def model(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig.from_name("llama-debug", **{**TEST_MODEL_OVERRIDES, **overrides}))


def rates_by_group(optimizer, scheduler, steps: int) -> list[list[float]]:
    rates = []
    for _ in range(steps):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("tied", [True, False])
def test_the_embedding_has_its_own_group_and_rate_under_adamw(tied: bool):
    gpt = model(tie_embeddings=tied)
    optimizer, scheduler = build_adamw(gpt.parameters(), SCHEDULE, 10, embedding=gpt.wte.weight)
    names = {id(p): name for name, p in gpt.named_parameters()}
    *_, embedding_group = optimizer.param_groups
    assert [names[id(p)] for p in embedding_group["params"]] == ["wte.weight"]
    assert embedding_group["weight_decay"] == 0.1
    others = [names[id(p)] for group in optimizer.param_groups[:-1] for p in group["params"]]
    assert "wte.weight" not in others and ("lm_head.weight" in others) == (not tied)
    multipliers = [SCHEDULE.lr_at(step, 10) / 1e-3 for step in range(4)]
    expected = [[1e-3 * m, 1e-3 * m, 0.05 * m] for m in multipliers]
    assert rates_by_group(optimizer, scheduler, 4) == [pytest.approx(r, rel=1e-12) for r in expected]


def test_the_embedding_rate_applies_next_to_muon():
    gpt = model(tie_embeddings=True)
    optimizer, scheduler = build_muon_adamw(gpt, SCHEDULE, MuonConfig(lr=0.02), decay_steps=10)
    decayed, plain, embedding, muon = optimizer.param_groups
    assert len(embedding["params"]) == 1 and embedding["params"][0] is gpt.wte.weight
    assert embedding["initial_lr"] == 0.05
    assert not decayed["params"], "the tied embedding was the only decayed AdamW matrix"
    assert rates_by_group(optimizer, scheduler, 1) == [pytest.approx([5e-4, 5e-4, 0.025, 0.01])]


def test_without_an_embedding_rate_the_groups_are_as_before():
    gpt = model(tie_embeddings=True)
    optimizer, _ = build_adamw(
        gpt.parameters(), replace(SCHEDULE, embedding_lr=None), 10, embedding=gpt.wte.weight
    )
    assert len(optimizer.param_groups) == 2


def test_a_negative_embedding_rate_is_refused():
    with pytest.raises(ValueError, match="embedding_lr"):
        AdamWConfig(embedding_lr=-1.0)
