"""Sweep files: parsing, errors that name the key, expansion into named runs, dotted overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lit_pretrain.experiments.sweep import (
    apply_overrides,
    expand,
    format_value,
    read_sweep,
    run_status,
    set_dotted,
)


def _sweep(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_grid_times_runs_times_budgets_gives_every_combination_with_readable_names(tmp_path):
    path = _sweep(
        tmp_path,
        """
output_dir: out/s
base: [configs/tiny.yaml]
fixed: {trainer.max_steps: 10}
grid:
  model.learning_rate: [1.0e-3, 3.0e-3]
runs:
  - {name: small, model.model_overrides.n_embd: 64}
  - {name: big, model.model_overrides.n_embd: 128}
flops_budgets: [1.0e+12, 2.0e+12]
""",
    )
    runs = expand(read_sweep(path))
    assert [run.name for run in runs] == [
        "small_learning_rate-0.001_C-1e12",
        "small_learning_rate-0.001_C-2e12",
        "small_learning_rate-0.003_C-1e12",
        "small_learning_rate-0.003_C-2e12",
        "big_learning_rate-0.001_C-1e12",
        "big_learning_rate-0.001_C-2e12",
        "big_learning_rate-0.003_C-1e12",
        "big_learning_rate-0.003_C-2e12",
    ]
    first = runs[0]
    assert first.directory == Path("out/s") / first.name
    assert first.overrides == {
        "trainer.max_steps": 10,
        "model.model_overrides.n_embd": 64,
        "model.learning_rate": 1e-3,
    }
    assert first.flops_budget == 1e12
    assert first.varied["flops_budget"] == 1e12


def test_unnamed_runs_are_named_by_their_values(tmp_path):
    path = _sweep(
        tmp_path,
        "base: configs/tiny.yaml\ngrid: {model.learning_rate: [0.002], data.micro_batch_size: [4, 8]}\n",
    )
    spec = read_sweep(path)
    assert spec.output_dir == Path("out/sweeps/sweep")  # from the file's name
    assert [run.name for run in expand(spec)] == [
        "learning_rate-0.002_micro_batch_size-4",
        "learning_rate-0.002_micro_batch_size-8",
    ]


def test_keys_that_end_alike_are_named_in_full(tmp_path):
    path = _sweep(tmp_path, "base: [a.yaml]\ngrid: {model.seed: [1], data.seed: [2]}\n")
    assert expand(read_sweep(path))[0].name == "model.seed-1_data.seed-2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: [a.yaml]\ngird: {x: [1]}\n", "unknown key(s) gird"),
        ("grid: {x: [1]}\n", "'base' must name"),
        ("base: [a.yaml]\ngrid: {model.learning_rate: 0.1}\n", "grid key 'model.learning_rate' must have"),
        ("base: [a.yaml]\ngrid: {model.learning_rate: []}\n", "non-empty list"),
        ("base: [a.yaml]\nruns: {a: 1}\n", "'runs' must be a list"),
        ("base: [a.yaml]\nflops_budgets: [1e15]\n", "write 1.0e+15, not 1e15"),
        (
            "base: [a.yaml]\nflops_budgets: [1.0e+15]\ngrid: {model.max_tokens: [5]}\n",
            "sets model.max_tokens",
        ),
        ("base: [a.yaml]\n- a list\n", "not valid YAML"),
        ("- base\n", "a sweep file is a mapping"),
    ],
)
def test_a_bad_sweep_file_is_refused_naming_the_file_and_the_key(tmp_path, text, message):
    path = _sweep(tmp_path, text)
    with pytest.raises(ValueError, match="sweep.yaml") as raised:
        read_sweep(path)
    assert message in str(raised.value)


def test_two_runs_with_one_name_are_refused(tmp_path):
    path = _sweep(tmp_path, "base: [a.yaml]\nruns: [{name: a, x.y: 1}, {name: a, x.y: 2}]\n")
    with pytest.raises(ValueError, match="both be named 'a'"):
        expand(read_sweep(path))


def test_a_key_in_both_grid_and_runs_is_refused(tmp_path):
    path = _sweep(tmp_path, "base: [a.yaml]\ngrid: {x.y: [1]}\nruns: [{x.y: 2}]\n")
    with pytest.raises(ValueError, match=r"x\.y are both in 'grid' and 'runs'"):
        expand(read_sweep(path))


def test_a_missing_sweep_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_sweep(tmp_path / "nope.yaml")


def test_dotted_overrides_reach_into_dict_options_and_leave_the_base_alone():
    base = {"model": {"model_overrides": None, "learning_rate": 1.0}, "trainer": {"max_steps": 5}}
    result = apply_overrides(base, {"model.model_overrides.n_embd": 64, "trainer.max_steps": 7})
    assert result == {
        "model": {"model_overrides": {"n_embd": 64}, "learning_rate": 1.0},
        "trainer": {"max_steps": 7},
    }
    assert base["model"]["model_overrides"] is None


def test_a_dotted_key_outside_the_configuration_is_named():
    with pytest.raises(ValueError, match="'modle' is not a section"):
        set_dotted({"model": {}}, "modle.learning_rate", 1.0)
    with pytest.raises(ValueError, match="'learning_rate' holds 1.0, not a mapping"):
        set_dotted({"model": {"learning_rate": 1.0}}, "model.learning_rate.x", 1)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.003, "0.003"), (2e-5, "2e-5"), (200_000, "2e5"), (1_500_000, "1.5e6"), (64, "64"), (True, "true")],
)
def test_values_are_written_compactly_in_run_names(value, text):
    assert format_value(value) == text


def test_run_status_reads_the_result_fit_writes(tmp_path):
    assert run_status(tmp_path / "never") == "new"
    (tmp_path / "checkpoints").mkdir()
    assert run_status(tmp_path) == "unfinished"
    (tmp_path / "result.json").write_text(json.dumps({"status": "interrupted"}))
    assert run_status(tmp_path) == "unfinished"
    (tmp_path / "result.json").write_text(json.dumps({"status": "finished"}))
    assert run_status(tmp_path) == "finished"
    (tmp_path / "result.json").write_text("{half a fi")
    assert run_status(tmp_path) == "unfinished"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "base: [a.yaml]\nfixed: {model.learning_rate: 1.0}\ngrid: {model.learning_rate: [2.0]}\n",
            "model.learning_rate are both fixed and varied",
        ),
        ("base: [a.yaml]\nfixed: {checkpoint.dirpath: /scratch}\n", "checkpoint.dirpath cannot be set"),
        ("base: [a.yaml]\nruns: [{trainer.default_root_dir: x}]\n", "default_root_dir cannot be set"),
        ("base: [a.yaml]\nfixed: {model.max_tokens: 5}\nflops_budgets: [1.0e+15]\n", "sets model.max_tokens"),
    ],
)
def test_settings_the_sweep_owns_or_gets_twice_are_refused(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_sweep(_sweep(tmp_path, text))


def test_a_fixed_key_inside_a_dict_survives_a_run_that_sets_the_dict(tmp_path):
    path = _sweep(
        tmp_path,
        """
base: [a.yaml]
fixed: {model.model_overrides.qk_norm: true}
runs:
  - {name: a, model.model_overrides: {n_layer: 2}}
  - {name: b, model.model_overrides: {n_layer: 4}}
""",
    )
    base = {"model": {"model_overrides": {"vocab_size": 512}}}
    configs = [apply_overrides(base, run.overrides) for run in expand(read_sweep(path))]
    assert [c["model"]["model_overrides"] for c in configs] == [
        {"vocab_size": 512, "qk_norm": True, "n_layer": 2},
        {"vocab_size": 512, "qk_norm": True, "n_layer": 4},
    ]
