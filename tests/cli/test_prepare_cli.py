"""`lit-pretrain prepare` and `data inspect` on the command line: option forms, help, errors, output."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lit_pretrain.cli import main
from lit_pretrain.cli.prepare import build_parser, rewrite_argv
from tests.helpers.corpus import prose, write_jsonl_texts


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A directory with `train.jsonl` (8 documents) and `held.jsonl`, `more.jsonl` (2 each)."""
    write_jsonl_texts(tmp_path / "train.jsonl", [prose(s) for s in range(8)])
    write_jsonl_texts(tmp_path / "held.jsonl", [prose(s) for s in range(50, 52)])
    write_jsonl_texts(tmp_path / "more.jsonl", [prose(s) for s in range(60, 62)])
    return tmp_path


def run_prepare(corpus: Path, *options: str) -> dict:
    """Prepare train.jsonl into corpus/out with a small vocabulary; the manifest."""
    main(["prepare", str(corpus / "train.jsonl"), "--vocab_size", "300", *options])
    return json.loads((corpus / "out" / "manifest.json").read_text())


def test_a_filter_field_is_its_own_option(corpus: Path):
    manifest = run_prepare(
        corpus, "--output_dir", str(corpus / "out"), "--filters.max_chars", "100000", "--dedup.near", "true"
    )
    assert manifest["filter_config"]["max_chars"] == 100000
    assert manifest["filter_config"]["min_chars"] == 10, "the other fields keep their defaults"
    assert manifest["dedup_config"]["near"] is True


def test_filters_and_dedup_still_take_a_yaml_mapping(corpus: Path):
    manifest = run_prepare(
        corpus,
        "--output_dir",
        str(corpus / "out"),
        "--filters",
        "{max_chars: 50000, blocklist: [lorem ipsum]}",
        "--dedup",
        "{near: true}",
    )
    assert manifest["filter_config"]["max_chars"] == 50000
    assert manifest["filter_config"]["blocklist"] == ["lorem ipsum"]
    assert manifest["dedup_config"]["near"] is True


def test_a_yaml_config_with_filters_and_dedup_mappings(corpus: Path):
    config = corpus / "prepare.yaml"
    config.write_text(
        f"inputs: [{corpus / 'train.jsonl'}]\n"
        f"val_inputs: [{corpus / 'held.jsonl'}]\n"
        "vocab_size: 300\n"
        'filters: {max_chars: 1000000, blocklist: ["lorem ipsum"]}\n'
        "dedup: {near: true}\n"
    )
    main(["prepare", "--config", str(config), "--output_dir", str(corpus / "out")])
    manifest = json.loads((corpus / "out" / "manifest.json").read_text())
    assert manifest["filter_config"]["max_chars"] == 1_000_000 and manifest["dedup_config"]["near"]
    assert manifest["sources"]["held"]["val"]["documents"] == 2


def test_a_boolean_flag_without_a_value_before_other_options(corpus: Path):
    run_prepare(corpus, "--output_dir", str(corpus / "out"))
    manifest = run_prepare(corpus, "--overwrite", "--output_dir", str(corpus / "out"), "--val_fraction", "0")
    assert manifest["val_fraction"] == 0


def test_val_inputs_takes_a_bare_path_and_repeats(corpus: Path):
    held, more = str(corpus / "held.jsonl"), str(corpus / "more.jsonl")
    manifest = run_prepare(corpus, "--output_dir", str(corpus / "out"), "--val_inputs", held)
    assert manifest["val_inputs"] == [held]
    assert manifest["sources"]["held"]["val"]["documents"] == 2
    manifest = run_prepare(
        corpus, "--output_dir", str(corpus / "out"), "--overwrite", "--val_inputs", held, "--val_inputs", more
    )
    assert manifest["val_inputs"] == [held, more]
    assert manifest["sources"]["more"]["train"]["documents"] == 0


def test_prepare_prints_its_log_and_the_summary(corpus: Path, capsys):
    run_prepare(corpus, "--output_dir", str(corpus / "out"), "--val_fraction", "0")
    out = capsys.readouterr().out
    assert "[prepare] read, filter, dedup: 8 docs" in out
    assert "[prepare] trained a byte-level BPE tokenizer with 300 tokens in " in out
    assert f"[prepare] done: {corpus / 'out'} (manifest.json" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("source "))
    assert lines[header + 1].split()[:3] == ["train", "8", "8"]
    assert lines[header + 2].startswith("total ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--filters.min_chars", "-1"], "filter option min_chars must be a non-negative integer, got -1"),
        (["--dedup.num_bands", "0"], "dedup num_bands must be a positive integer, got 0"),
        (["--val_fraction", "1.5"], r"val_fraction must be in \[0, 1\), got 1.5"),
    ],
)
def test_invalid_values_are_one_error_line(corpus: Path, args: list[str], message: str):
    with pytest.raises(SystemExit, match=f"^lit-pretrain prepare: error: {message}"):
        run_prepare(corpus, "--output_dir", str(corpus / "out"), *args)
    assert not (corpus / "out").exists()


def test_user_errors_go_through_the_cli_convention(corpus: Path):
    run_prepare(corpus, "--output_dir", str(corpus / "out"))
    with pytest.raises(
        SystemExit, match=r"^lit-pretrain prepare: error: .*out already exists: pass --overwrite"
    ):
        run_prepare(corpus, "--output_dir", str(corpus / "out"))
    with pytest.raises(
        SystemExit, match=r"^lit-pretrain prepare: error: input '.*missing.jsonl' matches no file"
    ):
        main(["prepare", str(corpus / "missing.jsonl"), "--output_dir", str(corpus / "other")])
    with pytest.raises(
        SystemExit, match=r"^lit-pretrain data: error: data directory .*nowhere does not exist"
    ):
        main(["data", "inspect", str(corpus / "nowhere")])


def test_an_unknown_filter_is_refused_by_the_parser(corpus: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_prepare(corpus, "--output_dir", str(corpus / "out"), "--filters", "{min_char: 5}")
    assert exit_info.value.code == 2
    assert "min_char" in capsys.readouterr().err


def test_help_lists_every_filter_and_dedup_field_with_its_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--filters.max_chars MAX_CHARS drop a document longer than this after cleaning" in out
    assert "--filters.blocklist" in out and "--filters.drop_generated_code" in out
    assert "--dedup.near {true,false} MinHash-LSH near-duplicate detection" in out


def test_data_inspect_prints_the_summary(corpus: Path, capsys):
    run_prepare(corpus, "--output_dir", str(corpus / "out"), "--val_fraction", "0")
    capsys.readouterr()
    main(["data", "inspect", str(corpus / "out"), "--num_sequences", "1", "--seq_len", "8"])
    out = capsys.readouterr().out
    assert "vocab 300 (uint16)" in out and "--- train/train (8 tokens) ---" in out
    assert any(line.startswith("total ") for line in out.splitlines())


@pytest.fixture(scope="module")
def parser():
    return build_parser()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # A boolean stands alone, or takes true/false/yes/no/on/off (any case).
        (
            ["a", "--overwrite", "--output_dir", "x"],
            ["--overwrite", "true", "--output_dir", "x", "--inputs", '["a"]'],
        ),
        (
            ["--overwrite", "a", "--output_dir", "x"],
            ["--overwrite", "true", "--output_dir", "x", "--inputs", '["a"]'],
        ),
        (["--overwrite", "False", "a"], ["--overwrite", "False", "--inputs", '["a"]']),
        (["a", "--overwrite"], ["--overwrite", "true", "--inputs", '["a"]']),
        (
            ["--filters.normalize_nfc", "--dedup.near", "no"],
            ["--filters.normalize_nfc", "true", "--dedup.near", "no"],
        ),
        # A list option takes a bare item, a YAML list, repeats, and the `=` form.
        (["--val_inputs", "held.jsonl"], ["--val_inputs", '["held.jsonl"]']),
        (["--val_inputs", "[a, b]", "--val_inputs", "c"], ["--val_inputs", "[a, b]", "--val_inputs+", "c"]),
        (["--val_inputs=held.jsonl"], ["--val_inputs", '["held.jsonl"]']),
        (["--val_inputs", "data/[ab].jsonl"], ["--val_inputs", '["data/[ab].jsonl"]']),
        (["--filters.blocklist", "spam"], ["--filters.blocklist", '["spam"]']),
        # Positional inputs add to an --inputs given too.
        (["--inputs", "a", "b"], ["--inputs", '["a"]', "--inputs+", '["b"]']),
        # Other options take the next word whatever it looks like; flags take none.
        (["--eos_token", "-x-", "a"], ["--eos_token", "-x-", "--inputs", '["a"]']),
        (["--unknown", "v", "a"], ["--unknown", "v", "--inputs", '["a"]']),
        (["a", "--print_config"], ["--print_config", "--inputs", '["a"]']),
        (["--help"], ["--help"]),
        (["--output_dir"], ["--output_dir"]),
    ],
)
def test_rewrite_argv(parser, argv: list[str], expected: list[str]):
    assert rewrite_argv(parser, argv) == expected


def test_the_documented_example_parses(parser):
    command = (
        "dumps/web-*.jsonl.zst --output_dir data/web --text_field content --id_field meta.id "
        """--vocab_size 32000 --dedup.near true --filters.blocklist '["lorem ipsum"]' """
        "--val_inputs heldout/wiki.jsonl"
    )
    args = parser.instantiate(parser.parse_args(rewrite_argv(parser, shlex.split(command))))
    assert args.inputs == ["dumps/web-*.jsonl.zst"] and args.val_inputs == ["heldout/wiki.jsonl"]
    assert args.dedup.near and args.filters.blocklist == ["lorem ipsum"] and args.vocab_size == 32000


def test_prepare_never_imports_lightning(corpus: Path):
    # Lightning's import (torchmetrics, scipy) costs seconds, paid again by every spawned worker.
    code = (
        "import sys; from lit_pretrain.cli import main; "
        f"main(['prepare', {str(corpus / 'train.jsonl')!r}, '--output_dir', {str(corpus / 'out')!r}, "
        "'--vocab_size', '300', '--num_proc', '2']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'torchmetrics')))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().splitlines()[-1] == "[]"
    assert (corpus / "out" / "manifest.json").exists()
