"""Command line of `lit-pretrain prepare`."""

from __future__ import annotations

import json
import os
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

from lit_pretrain.data.prepare import prepare


def build_parser() -> ArgumentParser:
    """Options of `lit-pretrain prepare`; every one can also come from a YAML file via --config."""
    parser = ArgumentParser(prog="lit-pretrain prepare", description="Tokenize raw text into litdata shards.")
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with any of the options below")
    parser.add_argument(
        "--inputs",
        type=list[str],
        default=[],
        help="files, directories (recursive) or globs of .txt/.md/.rst/.py files; 'python-stdlib' for the "
        "built-in corpus. Also accepted as positional arguments: prepare INPUT... --output_dir DIR",
    )
    parser.add_argument(
        "--output_dir", type=str, required=True, help="where train/, val/ and manifest.json go"
    )
    parser.add_argument(
        "--tokenizer", type=str | None, default=None, help="tokenizer.json (or its directory)"
    )
    parser.add_argument(
        "--vocab_size", type=int, default=8192, help="vocabulary of the BPE trained when no --tokenizer"
    )
    parser.add_argument(
        "--eos_token", type=str | None, default=None, help="end-of-document token, if not standard"
    )
    parser.add_argument(
        "--val_fraction", type=float, default=0.01, help="share of documents held out, by id hash"
    )
    parser.add_argument(
        "--max_documents_per_source", type=int | None, default=None, help="take only the first N documents"
    )
    parser.add_argument(
        "--text_field", type=str, default="text", help="JSONL: dotted path of the text, e.g. meta.body"
    )
    parser.add_argument(
        "--id_field", type=str | None, default=None, help="JSONL: dotted path of a unique document id"
    )
    parser.add_argument(
        "--val_inputs",
        type=list[str],
        default=[],
        help="inputs used only for validation, each a named source",
    )
    parser.add_argument(
        "--bos_token", type=str | None, default=None, help="also start every document with this token"
    )
    parser.add_argument(
        "--filters",
        type=dict[str, Any] | None,
        default=None,
        help="cleaning and quality filter settings (see docs/data.md), e.g. '{max_chars: 100000}'",
    )
    parser.add_argument(
        "--dedup",
        type=dict[str, Any] | None,
        default=None,
        help="deduplication settings, e.g. '{near: true}'",
    )
    parser.add_argument(
        "--num_workers",
        type=int | None,
        default=None,
        help="tokenizer threads (the Rust tokenizer encodes batches in parallel); default: all cores",
    )
    parser.add_argument("--chunk_tokens", type=int, default=2**21, help="tokens per litdata chunk file")
    parser.add_argument("--overwrite", type=bool, default=False, help="replace an existing output_dir")
    return parser


FLAGS_WITHOUT_VALUE = ("-h", "--help", "--print_config")


def positionals_to_inputs(argv: list[str]) -> list[str]:
    """Rewrite `INPUT... --opt v` as `--opt v --inputs [INPUT...]`.

    A positional argument would always override `inputs` from --config (even when empty), so bare
    arguments are collected here and passed as `--inputs` only when there are some.
    """
    options, positionals, index = [], [], 0
    while index < len(argv):
        token = argv[index]
        if token.startswith("-"):
            takes_value = "=" not in token and token not in FLAGS_WITHOUT_VALUE
            options.extend(argv[index : index + 2] if takes_value else [token])
            index += 2 if takes_value else 1
        else:
            positionals.append(token)
            index += 1
    return options + (["--inputs", json.dumps(positionals)] if positionals else [])


def main(argv: list[str]) -> None:
    """Parse `argv` and run prepare."""
    parser = build_parser()
    args = parser.parse_args(positionals_to_inputs(argv))
    if not args.inputs:
        parser.error("name at least one input (a file, directory, glob, or python-stdlib)")
    if args.num_workers is not None:
        if args.num_workers < 1:
            parser.error(f"--num_workers must be at least 1, got {args.num_workers}")
        # Read by the tokenizer's thread pool when it first starts, which is after this point.
        os.environ["RAYON_NUM_THREADS"] = str(args.num_workers)
    try:
        prepare(
            inputs=args.inputs,
            output_dir=args.output_dir,
            tokenizer=args.tokenizer,
            vocab_size=args.vocab_size,
            eos_token=args.eos_token,
            val_fraction=args.val_fraction,
            max_documents_per_source=args.max_documents_per_source,
            chunk_tokens=args.chunk_tokens,
            overwrite=args.overwrite,
            text_field=args.text_field,
            id_field=args.id_field,
            bos_token=args.bos_token,
            val_inputs=args.val_inputs,
            filters=args.filters,
            dedup=args.dedup,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        raise SystemExit(f"lit-pretrain prepare: error: {err}") from err
