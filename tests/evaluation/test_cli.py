"""`lit-pretrain evaluate` end to end, on a trained checkpoint and on a Hugging Face directory, with the
shipped tasks; and its errors, one line each through the CLI's error handling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from lit_pretrain.cli import main, usage
from lit_pretrain.evaluation.multiple_choice import shipped_tasks

TASKS = sorted(shipped_tasks())


def _evaluate(capsys, *argv: str) -> tuple[dict, str]:
    main(["evaluate", *argv])
    printed = capsys.readouterr().out
    output = next(argv[i + 1] for i, a in enumerate(argv) if a == "--output")
    return json.loads(Path(output).read_text()), printed


def _held_out_text(tmp_path: Path) -> Path:
    path = tmp_path / "held-out.txt"
    path.write_text("def double(x):\n    return 2 * x\n", encoding="utf-8")
    return path


def test_evaluate_a_checkpoint_on_text_shards_and_the_shipped_tasks(
    in_loop_run, small_corpus: Path, tmp_path: Path, capsys
):
    run_dir, _ = in_loop_run
    checkpoint = run_dir / "checkpoints" / "step-0000006.ckpt"
    output = tmp_path / "results" / "checkpoint.json"
    results, printed = _evaluate(
        capsys,
        *("--checkpoint", str(checkpoint), "--text", str(_held_out_text(tmp_path))),
        *("--data_dir", str(small_corpus), "--tasks", *TASKS),
        *("--limit", "5", "--batch_size", "4", "--device", "cpu", "--output", str(output)),
    )
    assert results["model"]["global_step"] == 6 and results["model"]["max_length"] == 64
    text = results["language_modeling"]["text"]
    assert text["documents"] == 1 and 0 < text["bits_per_byte"] < 20
    assert text["perplexity"] == pytest.approx(math.exp(text["loss"]))
    assert {f"val/{s}" for s in json.loads((small_corpus / "manifest.json").read_text())["sources"]} <= set(
        results["language_modeling"]
    )
    assert set(results["tasks"]) == set(TASKS)
    for task in results["tasks"].values():
        assert task["n"] == 5 and 0 <= task["acc"] <= 1 and 0 <= task["acc_norm"] <= 1
    header, *rows = printed.splitlines()
    assert header.split() == ["metric", "value", "n"]
    assert any(row.startswith("text/bits_per_byte") for row in rows)
    assert any(row.split()[0] == f"{TASKS[0]}/acc_norm" and row.split()[2] == "5" for row in rows)
    assert f"results written to {output}" in printed


def test_evaluate_a_hugging_face_directory(hf_dir: Path, tmp_path: Path, capsys):
    jsonl = tmp_path / "held.jsonl"
    jsonl.write_text(json.dumps({"doc": {"text": "x = 1\nprint(x)\n"}}) + "\n{broken\n")
    output = tmp_path / "hf.json"
    results, printed = _evaluate(
        capsys,
        *("--hf_dir", str(hf_dir), "--jsonl", str(jsonl), "--text_field", "doc.text"),
        *("--tasks", *TASKS, "--limit", "3", "--output", str(output)),
    )
    assert results["model"]["kind"] == "Hugging Face model" and results["model"]["max_length"] == 48
    assert results["model"]["architectures"] == ["LlamaForCausalLM"]
    jsonl_result = results["language_modeling"]["jsonl"]
    assert jsonl_result["documents"] == 1 and jsonl_result["skipped"]["count"] == 1
    assert jsonl_result["skipped"]["first"][0].startswith(f"{jsonl}:2: invalid JSON")
    assert f"jsonl: 1 record(s) skipped, e.g. {jsonl}:2" in printed
    assert all(task["n"] == 3 for task in results["tasks"].values())


def _not_a_checkpoint(tmp_path: Path) -> str:
    (tmp_path / "run").mkdir()
    return str(tmp_path / "run")


def _unsupported_architecture(tmp_path: Path) -> str:
    from transformers import ViTConfig

    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "vit")
    return str(tmp_path / "vit")


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (
            lambda t: ["--checkpoint", str(t / "missing.ckpt"), "--tasks", TASKS[0]],
            "no checkpoint at .*missing.ckpt",
        ),
        (
            lambda t: ["--checkpoint", _not_a_checkpoint(t), "--tasks", TASKS[0]],
            "run is not a sharded lit-pretrain",
        ),
        (
            lambda t: ["--hf_dir", str(t / "nowhere"), "--tasks", TASKS[0]],
            "no Hugging Face model directory at",
        ),
        (
            lambda t: ["--hf_dir", _not_a_checkpoint(t), "--tasks", TASKS[0]],
            "run is not a Hugging Face model dir",
        ),
        (
            lambda t: ["--hf_dir", _unsupported_architecture(t), "--tasks", TASKS[0]],
            "cannot load .*vit as a causal",
        ),
        (lambda t: ["--tasks", TASKS[0]], "exactly one of --checkpoint PATH and --hf_dir DIR"),
        (lambda t: ["--checkpoint", "x.ckpt"], "nothing to evaluate"),
    ],
    ids=["missing", "not-a-checkpoint", "missing-hf", "not-hf", "unsupported-hf", "no-model", "nothing"],
)
def test_errors_are_one_line_naming_the_path(tmp_path: Path, make_args, message: str):
    with pytest.raises(SystemExit, match=f"lit-pretrain evaluate: error: .*{message}") as exit_info:
        main(["evaluate", *make_args(tmp_path)])
    assert "\n" not in str(exit_info.value)


def test_a_missing_task_or_text_is_named(random_checkpoint: Path, tmp_path: Path):
    with pytest.raises(SystemExit, match="--tasks no_such_task: neither a shipped task"):
        main(["evaluate", "--checkpoint", str(random_checkpoint), "--tasks", "no_such_task"])
    with pytest.raises(SystemExit, match="--text .*absent.txt: no such file"):
        main(["evaluate", "--checkpoint", str(random_checkpoint), "--text", str(tmp_path / "absent.txt")])


def test_the_verb_is_listed():
    assert "evaluate  loss, bits per byte and multiple-choice accuracy" in usage()


def test_an_exported_checkpoint_scores_as_the_checkpoint(
    in_loop_run, small_corpus: Path, tmp_path: Path, capsys
):
    """`lit-pretrain export` then `evaluate --hf_dir`: the same model through transformers, same numbers."""
    from lit_pretrain.interop.export import export_checkpoint

    run_dir, _ = in_loop_run
    checkpoint = run_dir / "checkpoints" / "step-0000006.ckpt"
    exported = export_checkpoint(checkpoint, tmp_path / "hf")
    text = str(_held_out_text(tmp_path))
    common = ["--text", text, "--data_dir", str(small_corpus), "--tasks", *TASKS, "--limit", "8"]
    ours, _ = _evaluate(
        capsys, "--checkpoint", str(checkpoint), *common, "--output", str(tmp_path / "a.json")
    )
    theirs, _ = _evaluate(capsys, "--hf_dir", str(exported), *common, "--output", str(tmp_path / "b.json"))
    assert ours["language_modeling"].keys() == theirs["language_modeling"].keys()
    for name, result in ours["language_modeling"].items():
        other = theirs["language_modeling"][name]
        assert result["loss"] == pytest.approx(other["loss"], rel=1e-4), name
        assert (result["tokens"], result["bytes"]) == (other["tokens"], other["bytes"]), name
    for task in TASKS:
        for metric in ("acc", "acc_norm"):
            assert ours["tasks"][task][metric] == theirs["tasks"][task][metric]
