"""`lit-pretrain evaluate`: loss, perplexity, bits per byte and multiple-choice accuracy of a checkpoint or a
Hugging Face model directory (docs/evaluation.md)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from jsonargparse import ArgumentParser

from lit_pretrain.evaluation.harness import evaluate
from lit_pretrain.evaluation.models import DTYPES, load_language_model
from lit_pretrain.evaluation.multiple_choice import shipped_tasks


def build_parser() -> ArgumentParser:
    """Options of `lit-pretrain evaluate`."""
    parser = ArgumentParser(
        prog="lit-pretrain evaluate",
        description="Evaluate a checkpoint or a Hugging Face model: language-modelling metrics of texts "
        "and zero-shot multiple-choice tasks.",
    )
    parser.add_argument("--checkpoint", type=str | None, default=None, help="a .ckpt (or sharded directory)")
    parser.add_argument(
        "--hf_dir", type=str | None, default=None, help="a local transformers model directory (safetensors)"
    )
    parser.add_argument("--text", nargs="+", type=str, default=[], help="text files: one document each")
    parser.add_argument("--jsonl", nargs="+", type=str, default=[], help="JSONL files: one document a line")
    parser.add_argument("--text_field", type=str, default="text", help="JSONL: dotted path of the text")
    parser.add_argument(
        "--data_dir",
        type=str | None,
        default=None,
        help="a `lit-pretrain prepare` output: its validation split",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        type=str,
        default=[],
        help=f"multiple-choice tasks: shipped names ({', '.join(shipped_tasks())}) or JSONL files",
    )
    parser.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype", type=str | None, default=None, help=f"{', '.join(DTYPES)} (default: as saved)"
    )
    parser.add_argument("--batch_size", type=int, default=8, help="rows per forward pass")
    parser.add_argument(
        "--max_length", type=int | None, default=None, help="cap on the tokens per forward pass (the context)"
    )
    parser.add_argument(
        "--limit", type=int | None, default=None, help="first N documents, windows per source, or records"
    )
    parser.add_argument("--output", type=str | None, default=None, help="write the results as JSON here")
    return parser


def main(argv: list[str]) -> None:
    """Parse `argv`, load the model, evaluate, print a table and write the JSON results."""
    args = build_parser().parse_args(argv)
    if not (args.text or args.jsonl or args.data_dir or args.tasks):
        raise ValueError("nothing to evaluate: give --text, --jsonl, --data_dir and/or --tasks")
    model = load_language_model(args.checkpoint, args.hf_dir, args.device, args.dtype, args.max_length)
    results = evaluate(
        model,
        text=args.text,
        jsonl=args.jsonl,
        text_field=args.text_field,
        data_dir=args.data_dir,
        tasks=args.tasks,
        batch_size=args.batch_size,
        limit=args.limit,
    )
    print(results.table(), flush=True)
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results.to_json(), indent=2) + "\n")
        print(f"results written to {output}")
