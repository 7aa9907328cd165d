"""Every YAML under configs/ parses with --print_config, alone and in the documented combinations."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lit_pretrain.cli import main
from lit_pretrain.model import available_models
from tests.helpers.paths import CONFIGS

ALL_YAML = sorted(CONFIGS.rglob("*.yaml"))


def print_config(args: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_there_are_configs_in_every_group():
    groups = {p.parent.name for p in ALL_YAML}
    assert {"model", "data", "trainer", "experiment", "prepare"} <= groups
    assert (CONFIGS / "tiny.yaml").is_file()


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_yaml_parses_with_print_config(path: Path, capsys):
    if path.parent.name == "prepare":
        printed = print_config(["prepare", "--config", str(path), "--output_dir", "unused"], capsys)
        assert printed["inputs"], "a prepare config names its inputs"
    elif path.parent.name == "sweeps":
        # A sweep file: every run's resolved `fit` configuration is built and checked by fit's parser.
        main(["sweep", str(path), "--dry-run"])
        listed = capsys.readouterr().out
        assert "runs in" in listed and "total:" in listed
    else:
        printed = print_config(["fit", "--config", str(path)], capsys)
        assert printed["model"]["model_name"] in available_models()


def test_composed_experiment_equals_the_complete_demo(capsys):
    composed = print_config(
        ["fit"]
        + [
            arg
            for name in ("trainer/cpu", "model/tiny", "data/python-stdlib", "experiment/tiny-cpu")
            for arg in ("--config", str(CONFIGS / f"{name}.yaml"))
        ],
        capsys,
    )
    complete = print_config(["fit", "--config", str(CONFIGS / "tiny.yaml")], capsys)
    assert composed == complete


def test_standard_overrides_work(capsys):
    printed = print_config(
        [
            "fit",
            "--config",
            str(CONFIGS / "tiny.yaml"),
            "--trainer.max_steps",
            "7",
            "--checkpoint.every_n_train_steps",
            "3",
        ],
        capsys,
    )
    assert printed["trainer"]["max_steps"] == 7
    checkpoint = printed["checkpoint"]
    assert checkpoint["every_n_train_steps"] == 3 and checkpoint["save_last"] == "link"
    assert checkpoint["keep_last"] == 3 and printed["preemption"]["requeue"] is False


def test_cli_help_and_unknown_command(capsys):
    main(["--help"])
    assert "prepare" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown command 'train'"):
        main(["train"])


# Which top-level keys each config group may write: a group never writes another group's keys.
GROUP_KEYS = {
    "model": {"model"},
    "data": {"data"},
    "trainer": {"trainer"},
    "parallel": {"model"},  # only model.parallel, checked below
    "callbacks": {"trainer", "perf", "loss_guard"},  # only trainer.callbacks, checked below
    "prepare": None,  # prepare's own options
    "experiment": None,  # an experiment says what one run changes, across groups
    "sweeps": None,  # sweep files (lit-pretrain sweep), not fit configs
}


@pytest.mark.parametrize(
    "path", [p for p in ALL_YAML if p.parent != CONFIGS], ids=lambda p: str(p.relative_to(CONFIGS))
)
def test_a_group_writes_only_its_own_keys(path: Path):
    group = path.parent.name
    assert group in GROUP_KEYS, f"{group}/ is not a known config group: add it to GROUP_KEYS and docs"
    content = yaml.safe_load(path.read_text())
    if GROUP_KEYS[group] is not None:
        assert set(content) <= GROUP_KEYS[group], (
            f"{path.name} writes {sorted(set(content) - GROUP_KEYS[group])}"
        )
    if group == "parallel":
        assert set(content["model"]) == {"parallel"}, f"{path.name} writes model keys other than parallel"
    if group == "callbacks" and "trainer" in content:
        assert set(content["trainer"]) == {"callbacks"}, (
            f"{path.name} writes trainer keys other than callbacks"
        )
    if group == "model":
        assert "parallel" not in content["model"], (
            f"{path.name}: parallel settings belong in configs/parallel/"
        )


def test_trainer_recipes_leave_the_shared_defaults_to_the_cli(capsys):
    """The keys every trainer recipe would repeat come from the CLI's defaults instead."""
    shared = {"gradient_clip_val", "num_sanity_val_steps", "check_val_every_n_epoch"}
    for path in sorted((CONFIGS / "trainer").glob("*.yaml")):
        assert not shared & set(yaml.safe_load(path.read_text())["trainer"]), path.name
    printed = print_config(["fit", "--config", str(CONFIGS / "trainer" / "cpu.yaml")], capsys)["trainer"]
    assert printed["gradient_clip_val"] == 1.0 and printed["num_sanity_val_steps"] == 0
    assert printed["check_val_every_n_epoch"] is None and printed["log_every_n_steps"] == 10


def test_the_usage_lists_every_verb_of_the_table(capsys):
    from lit_pretrain.cli import COMMANDS

    main(["--help"])
    out = capsys.readouterr().out
    assert all(f"lit-pretrain {example}" in out for _, _, example in COMMANDS.values())
