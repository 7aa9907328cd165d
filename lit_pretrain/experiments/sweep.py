"""A sweep: one base configuration and a grid (or list) of overrides, expanded into named runs.

A sweep file (YAML) says what to vary; `lit-pretrain sweep` (cli/sweep.py) runs it:

    name: lr-size                      # optional; the runs go to output_dir (default out/sweeps/<name>)
    output_dir: out/sweeps/lr-size
    base: [configs/tiny.yaml]          # `fit` config files, later ones win
    fixed:                             # dotted keys set in every run
      trainer.max_steps: 200
    grid:                              # every combination of these values ...
      model.learning_rate: [1.0e-3, 3.0e-3]
      model.model_overrides.n_embd: [128, 256]
    runs:                              # ... times each entry of this list (default: one empty entry)
      - {model.model_overrides.n_layer: 2}
      - {name: deep, model.model_overrides.n_layer: 4}   # `name` labels the entry's runs
    flops_budgets: [1.0e+15, 4.0e+15]  # optional: ... times each budget, model.max_tokens = C / (6 N)

With `flops_budgets` (IsoFLOP profiles, as Hoffmann et al.) each run trains for C / (6 N) tokens, N being
its model's parameter count, so that runs of every size spend the same compute.

A dotted key names a `fit` option (`trainer.max_steps`) or a key inside a dict-valued option
(`model.model_overrides.n_embd`). Each run's directory holds `config.yaml`, the whole resolved `fit`
configuration; `fit` writes `result.json` there when it ends (cli/fit.py), which is how a re-run knows a run
is finished. Nothing here starts a process: the CLI does.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SWEEP_KEYS = ("name", "output_dir", "base", "fixed", "grid", "runs", "flops_budgets", "slurm")
# Each run's directory is the sweep's to choose.
SWEEP_OWNED_KEYS = ("trainer.default_root_dir", "checkpoint.dirpath")
RESULT_FILE = "result.json"
RUN_FILE = "sweep_run.json"  # in each run's directory: the settings the sweep gave it
CONFIG_FILE = "config.yaml"
LOG_FILE = "train.log"
MANIFEST_FILE = "sweep.json"  # in the sweep's output_dir: the runs and their overrides, for compare/scaling
# What a run's directory name may hold; everything else becomes "_".
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]+")


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file."""

    path: Path
    name: str
    output_dir: Path
    base: tuple[str, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    runs: tuple[dict[str, Any], ...] = ({},)
    flops_budgets: tuple[float, ...] = ()
    slurm: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its name, its directory and the dotted overrides that make it."""

    name: str
    directory: Path
    varied: dict[str, Any]  # the overrides that differ between runs (what names the run)
    overrides: dict[str, Any]  # fixed + varied, applied over the base configs
    flops_budget: float | None = None  # training FLOPs (6 N D) that set model.max_tokens


def _mapping(value: Any, key: str, path: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{path}: '{key}' must be a mapping of dotted keys to values, got {value!r}")
    return dict(value)


def read_sweep(path: str | Path) -> SweepSpec:
    """Parse and check a sweep file; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: a sweep file is a mapping with keys {', '.join(SWEEP_KEYS)}")
    unknown = sorted(set(raw) - set(SWEEP_KEYS))
    if unknown:
        raise ValueError(
            f"{path}: unknown key(s) {', '.join(unknown)}; a sweep file has {', '.join(SWEEP_KEYS)}"
        )
    base = raw.get("base") or []
    base = [base] if isinstance(base, str) else base
    if not base or not all(isinstance(b, str) for b in base):
        raise ValueError(f"{path}: 'base' must name one or more `fit` config files")
    grid = _mapping(raw.get("grid"), "grid", path)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: grid key {key!r} must have a non-empty list of values, got {values!r}")
    runs = raw.get("runs") or [{}]
    if not isinstance(runs, list):
        raise ValueError(f"{path}: 'runs' must be a list of mappings of dotted keys to values")
    runs = [_mapping(entry, f"runs[{i}]", path) for i, entry in enumerate(runs)]
    budgets = raw.get("flops_budgets") or []
    if not isinstance(budgets, list) or not all(_is_positive_number(b) for b in budgets):
        raise ValueError(
            f"{path}: 'flops_budgets' must be a list of positive numbers (write 1.0e+15, not 1e15)"
        )
    fixed = _mapping(raw.get("fixed"), "fixed", path)
    varied_keys = {*grid, *(key for entry in runs for key in entry if key != "name")}
    if budgets and "model.max_tokens" in {*varied_keys, *fixed}:
        raise ValueError(f"{path}: 'flops_budgets' sets model.max_tokens; do not set it as well")
    both = sorted(set(fixed) & varied_keys)
    if both:
        raise ValueError(f"{path}: key(s) {', '.join(both)} are both fixed and varied: which value is meant?")
    owned = sorted(key for key in {*fixed, *varied_keys} if key in SWEEP_OWNED_KEYS)
    if owned:
        raise ValueError(
            f"{path}: {', '.join(owned)} cannot be set: the sweep puts each run in OUTPUT_DIR/<run name> "
            "(set output_dir instead)"
        )
    name = str(raw.get("name") or path.stem)
    output_dir = Path(raw.get("output_dir") or Path("out") / "sweeps" / name)
    return SweepSpec(
        path=path,
        name=name,
        output_dir=output_dir,
        base=tuple(base),
        fixed=fixed,
        grid=grid,
        runs=tuple(runs),
        flops_budgets=tuple(float(b) for b in budgets),
        slurm=_mapping(raw.get("slurm"), "slurm", path),
    )


def _is_positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def format_value(value: Any) -> str:
    """A value as it appears in a run's name: 0.003 -> 0.003, 2e-05 -> 2e-5, 200000 -> 2e5, lists joined by -."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) and abs(value) < 100_000:
        return str(value)
    if isinstance(value, int | float):
        return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{value:.4g}")
    if isinstance(value, list | tuple):
        return "-".join(format_value(v) for v in value)
    return str(value)


def run_name(varied: Mapping[str, Any]) -> str:
    """The directory name of a run: its varied keys' last components with their values."""
    if not varied:
        return "run"
    short = [key.rsplit(".", 1)[-1] for key in varied]
    # The last component alone is ambiguous when two varied keys end alike (model.x and data.x).
    labels = short if len(set(short)) == len(short) else list(varied)
    parts = [f"{label}={format_value(value)}" for label, value in zip(labels, varied.values(), strict=True)]
    return _NAME_UNSAFE.sub("_", ",".join(parts).replace("=", "-").replace(",", "_"))


def expand(spec: SweepSpec) -> list[PlannedRun]:
    """Every run of the sweep: each `runs` entry times each grid combination times each FLOPs budget."""
    grid_keys = list(spec.grid)
    combinations = [
        dict(zip(grid_keys, values, strict=True)) for values in itertools.product(*spec.grid.values())
    ]
    budgets: tuple[float | None, ...] = spec.flops_budgets or (None,)
    planned, seen = [], {}
    for entry in spec.runs:
        label = entry.get("name")
        entry = {key: value for key, value in entry.items() if key != "name"}
        for combination, budget in itertools.product(combinations, budgets):
            overlap = set(entry) & set(combination)
            if overlap:
                raise ValueError(
                    f"{spec.path}: key(s) {', '.join(sorted(overlap))} are both in 'grid' and 'runs'"
                )
            varied = {**entry, **combination}
            parts = [str(label)] if label is not None else []
            named = combination if label is not None else varied
            if named or label is None:
                parts.append(run_name(named))
            if budget is not None:
                parts.append(f"C-{format_value(budget)}")
            name = _NAME_UNSAFE.sub("_", "_".join(part for part in parts if part != "run") or "run")
            if name in seen:
                raise ValueError(
                    f"{spec.path}: two runs would both be named {name!r} ({seen[name]} and {varied}); "
                    "give the `runs` entries a `name`"
                )
            seen[name] = varied
            planned.append(
                PlannedRun(
                    name=name,
                    directory=spec.output_dir / name,
                    varied=varied | ({"flops_budget": budget} if budget is not None else {}),
                    overrides={**spec.fixed, **varied},
                    flops_budget=budget,
                )
            )
    return planned


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """Set `config[a][b][c] = value` for key "a.b.c"; a missing or None dict on the way becomes {}.

    A mapping set where a mapping is merges into it, key by key (so `fixed: {model.model_overrides.qk_norm:
    true}` survives a run's `model.model_overrides: {n_layer: 2}`). A missing first-level section is an
    error naming the key (a typo such as `modle.learning_rate`); deeper keys are checked when the resulting
    configuration is parsed.
    """
    parts = key.split(".")
    if parts[0] not in config:
        raise ValueError(
            f"{key!r}: {parts[0]!r} is not a section of the `fit` configuration ({', '.join(config)})"
        )
    node = config
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"{key!r}: {part!r} holds {child!r}, not a mapping")
        node = child
    _merge(node, parts[-1], value)


def _merge(node: dict[str, Any], key: str, value: Any) -> None:
    current = node.get(key)
    if isinstance(value, Mapping) and isinstance(current, dict):
        for inner_key, inner_value in value.items():
            _merge(current, str(inner_key), inner_value)
    else:
        node[key] = copy.deepcopy(value)  # a copy: later merges must not reach into the sweep file's values


def apply_overrides(config: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the nested `config` with every dotted override set."""
    result = json.loads(json.dumps(config))
    for key, value in overrides.items():
        set_dotted(result, key, value)
    return result


def read_result(run_dir: str | Path) -> dict[str, Any] | None:
    """The `result.json` that `fit` wrote when the run in `run_dir` ended; None if there is none yet."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # written atomically, so this is a file someone else put there: treat as unfinished


def run_status(run_dir: str | Path) -> str:
    """ "finished" (fit ended at its planned end), "unfinished" (started, not done) or "new"."""
    result = read_result(run_dir)
    if result is not None and result.get("status") == "finished":
        return "finished"
    run_dir = Path(run_dir)
    started = (run_dir / "checkpoints").is_dir() or (run_dir / LOG_FILE).is_file() or result is not None
    return "unfinished" if started else "new"


def write_manifest(spec: SweepSpec, runs: Sequence[PlannedRun]) -> Path:
    """`sweep.json` in the output directory: the sweep file, its runs and their varied values."""
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": spec.name,
        "sweep_file": str(spec.path),
        "base": list(spec.base),
        "fixed": spec.fixed,
        "runs": [{"name": run.name, "directory": run.name, "varied": run.varied} for run in runs],
    }
    path = spec.output_dir / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def sweep_run_dirs(sweep_dir: str | Path) -> list[Path]:
    """The run directories of a sweep output directory, in the sweep's order (from its `sweep.json`)."""
    sweep_dir = Path(sweep_dir)
    manifest = json.loads((sweep_dir / MANIFEST_FILE).read_text())
    return [sweep_dir / entry["directory"] for entry in manifest["runs"]]
