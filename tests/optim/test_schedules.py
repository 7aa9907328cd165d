"""warmup_cosine against values worked out by hand: literals, not the formula restated."""

from __future__ import annotations

import pytest

from lit_pretrain.optim.schedules import decay_start, warmup_cosine, warmup_stable_decay

# 10 warmup steps, cosine from step 10 to step 110, from 1e-3 down to 1e-4.
WARMUP, DECAY, MAX_LR, MIN_LR = 10, 110, 1e-3, 1e-4


def lr(step: int) -> float:
    return warmup_cosine(step, warmup_steps=WARMUP, decay_steps=DECAY, max_lr=MAX_LR, min_lr=MIN_LR)


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        # Warmup: step s (counted from 0) runs at max_lr * (s + 1) / warmup, so the first step is not 0
        # and the last warmup step already reaches max_lr.
        (0, 1e-4),
        (1, 2e-4),
        (4, 5e-4),
        (8, 9e-4),
        (9, 1e-3),
        # Cosine: progress p = (step - 10) / 100, lr = 1e-4 + 0.5 * (1 + cos(pi * p)) * 9e-4.
        (10, 1e-3),  # p = 0
        (35, 8.681980515339464e-4),  # p = 1/4: 1e-4 + 0.5 * (1 + 0.70710678) * 9e-4
        (60, 5.5e-4),  # p = 1/2: exactly halfway between max_lr and min_lr
        (85, 2.318019484660536e-4),  # p = 3/4: 1e-4 + 0.5 * (1 - 0.70710678) * 9e-4
        (109, 1.0022204783542e-4),  # p = 0.99: 1e-4 + 0.5 * (1 - 0.99950656036573) * 9e-4
        # From decay_steps on: flat at min_lr.
        (110, 1e-4),
        (111, 1e-4),
        (10_000, 1e-4),
    ],
)
def test_warmup_cosine_values(step: int, expected: float):
    assert lr(step) == pytest.approx(expected, rel=1e-9, abs=0)


def test_warmup_is_linear_and_decay_is_monotonic():
    values = [lr(step) for step in range(130)]
    steps = [b - a for a, b in zip(values[:WARMUP], values[1:WARMUP], strict=False)]
    assert steps == pytest.approx([1e-4] * (WARMUP - 1), rel=1e-9)
    assert all(b < a for a, b in zip(values[WARMUP:DECAY], values[WARMUP + 1 : DECAY + 1], strict=False))
    assert max(values) == MAX_LR and min(values) == MIN_LR


def test_cosine_is_symmetric_about_its_midpoint():
    # lr(10 + k) - mid and mid - lr(110 - k) are equal: the half-cosine is point-symmetric.
    mid = (MAX_LR + MIN_LR) / 2
    for k in (1, 13, 25, 49):
        assert lr(WARMUP + k) - mid == pytest.approx(mid - lr(DECAY - k), rel=1e-9)


def test_no_warmup_starts_at_max_lr():
    assert warmup_cosine(0, warmup_steps=0, decay_steps=100, max_lr=2.0, min_lr=0.0) == 2.0
    assert warmup_cosine(50, warmup_steps=0, decay_steps=100, max_lr=2.0, min_lr=0.0) == pytest.approx(1.0)
    assert warmup_cosine(100, warmup_steps=0, decay_steps=100, max_lr=2.0, min_lr=0.0) == 0.0


def test_one_step_of_decay():
    # decay_steps = warmup_steps + 1: the single decay step is at max_lr, the next one at min_lr.
    assert warmup_cosine(4, warmup_steps=4, decay_steps=5, max_lr=3.0, min_lr=1.0) == 3.0
    assert warmup_cosine(5, warmup_steps=4, decay_steps=5, max_lr=3.0, min_lr=1.0) == 1.0


def test_decay_ending_with_warmup_goes_straight_to_min_lr():
    # No cosine phase at all: warmup, then min_lr (no division by zero).
    assert warmup_cosine(3, warmup_steps=4, decay_steps=4, max_lr=3.0, min_lr=1.0) == 3.0
    assert warmup_cosine(4, warmup_steps=4, decay_steps=4, max_lr=3.0, min_lr=1.0) == 1.0
    assert warmup_cosine(4, warmup_steps=4, decay_steps=2, max_lr=3.0, min_lr=1.0) == 1.0


def test_min_lr_equal_to_max_lr_is_constant_after_warmup():
    values = [warmup_cosine(s, 2, 20, max_lr=0.5, min_lr=0.5) for s in range(2, 30)]
    assert values == [0.5] * len(values)


# warmup_stable_decay: 2 warmup steps, 10 steps in all, the last 0.4 (4 steps: 6 to 9) decaying 1.0 -> 0.2.
def wsd(step: int, shape: str = "linear", fraction: float = 0.4) -> float:
    return warmup_stable_decay(step, 2, 10, max_lr=1.0, min_lr=0.2, decay_fraction=fraction, shape=shape)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        # progress p = (step - 6) / 4 over steps 6..9; lr = 0.2 + 0.8 * remaining(p)
        ("linear", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.2]),
        # remaining = (1 + cos(pi p)) / 2: 1, 0.853553, 0.5, 0.146447
        ("cosine", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.882842712474619, 0.6, 0.317157287525381, 0.2, 0.2]),
        # remaining = 1 - sqrt(p): 1, 0.5, 0.292893, 0.133975
        ("sqrt", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.6, 0.434314575050762, 0.307179676972449, 0.2, 0.2]),
    ],
)
def test_warmup_stable_decay_values(shape: str, expected: list[float]):
    assert [wsd(step, shape) for step in range(12)] == pytest.approx(expected, rel=1e-12, abs=0)


def test_wsd_decay_boundaries():
    assert decay_start(warmup_steps=2, decay_steps=10, decay_fraction=0.4) == 6
    assert decay_start(warmup_steps=2, decay_steps=10, decay_fraction=0.2) == 8
    # A decay longer than the run after warmup starts right after warmup, never inside it.
    assert decay_start(warmup_steps=2, decay_steps=10, decay_fraction=1.0) == 2
    assert [wsd(s, fraction=1.0) for s in (1, 2, 6, 10)] == pytest.approx([1.0, 1.0, 0.6, 0.2])
    # No decay: max_lr to the end, min_lr from decay_steps on (as warmup_cosine).
    assert [wsd(s, fraction=0.0) for s in (2, 9, 10)] == [1.0, 1.0, 0.2]


def test_wsd_refuses_an_unknown_shape():
    with pytest.raises(ValueError, match="--model.decay_shape must be one of linear, cosine, sqrt"):
        wsd(7, shape="exp")
