"""Command line of `lit-pretrain prepare`."""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from typing import Any

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser

from lit_pretrain.data.decontaminate import DecontaminationConfig
from lit_pretrain.data.dedup import DedupConfig
from lit_pretrain.data.filters import FilterConfig
from lit_pretrain.data.manifest import summary_lines
from lit_pretrain.data.prepare import prepare

# What a boolean option accepts as its value (YAML 1.1, as jsonargparse reads it), in any case.
BOOL_WORDS = frozenset({"true", "false", "yes", "no", "on", "off"})
# Options whose value, if any, is attached with `=` (`--print_config=skip_null`).
ATTACHED_VALUE_ONLY = ("--print_config",)
# List options that take every bare word after them: evaluation files read as training inputs would put
# the evaluation data into the training set.
GREEDY_LISTS = ("--decontaminate",)


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
        help="inputs used only for validation, each a named source: --val_inputs held.jsonl, repeated "
        "for more, or a YAML list '[a.jsonl, b.jsonl]'",
    )
    parser.add_argument(
        "--bos_token", type=str | None, default=None, help="also start every document with this token"
    )
    parser.add_argument(
        "--filters",
        type=FilterConfig,
        default=FilterConfig(),
        help="cleaning and quality filters, null switches one off (docs/data.md): --filters.NAME VALUE, "
        "or a YAML mapping --filters '{NAME: VALUE, ...}'",
    )
    parser.add_argument(
        "--dedup",
        type=DedupConfig,
        default=DedupConfig(),
        help="deduplication (docs/data.md): --dedup.NAME VALUE, or --dedup '{NAME: VALUE, ...}'",
    )
    parser.add_argument(
        "--decontaminate",
        type=list[str],
        default=[],
        help="evaluation data whose 13-word sequences no training document may contain (docs/data.md): "
        "task JSONL, JSONL with a text field, or text files, directories, globs: --decontaminate FILE..., "
        "(every bare word up to the next option), repeated for more, or a YAML list",
    )
    parser.add_argument(
        "--decontamination",
        type=DecontaminationConfig,
        default=DecontaminationConfig(),
        help="decontamination settings (docs/data.md): --decontamination.NAME VALUE (ngram, min_words, "
        "choices, text_unit, text_field, files)",
    )
    parser.add_argument(
        "--num_workers",
        type=int | None,
        default=None,
        help="tokenizer threads (the Rust tokenizer encodes batches in parallel); default: all cores",
    )
    parser.add_argument(
        "--num_proc",
        type=int,
        default=1,
        help="processes for cleaning, filters, dedup keys and tokenization (one tokenizer thread each); "
        "the output is the same byte for byte for any number",
    )
    parser.add_argument(
        "--tasks",
        type=int | None,
        default=None,
        help="run as phases of this many tasks on datatrove's executor, --num_proc at a time, keeping "
        "state in --work_dir: a rerun of the same command redoes only unfinished tasks; same output",
    )
    parser.add_argument(
        "--work_dir",
        type=str | None,
        default=None,
        help="the tasks' shared work directory: a path every node sees, or an fsspec URL such as "
        "s3://bucket/work (default: OUTPUT.tasks)",
    )
    parser.add_argument(
        "--slurm",
        type=dict | None,
        default=None,
        help="with --tasks: submit the phases to Slurm as dependent job arrays, with these settings of "
        "datatrove's SlurmPipelineExecutor, e.g. '{partition: cpu, time: \"4:00:00\", cpus_per_task: 4}'",
    )
    parser.add_argument("--chunk_tokens", type=int, default=2**21, help="tokens per litdata chunk file")
    parser.add_argument(
        "--overwrite", type=bool, default=False, help="replace an existing output_dir (alone: true)"
    )
    return parser


def rewrite_argv(parser: ArgumentParser, argv: list[str]) -> list[str]:
    """`argv` in the form jsonargparse parses, for what it would refuse or misread.

    - Bare words are inputs: `INPUT... --opt v` becomes `--opt v --inputs [INPUT...]`. A positional
      argument would always override `inputs` from --config (even when empty), so bare words are passed
      as `--inputs` only when there are some (added to an `--inputs` given too).
    - A boolean option stands alone as true: `--overwrite --output_dir x` is `--overwrite true ...`.
    - A list option takes one item as well as a YAML list, and repeating it adds items:
      `--val_inputs a.jsonl --val_inputs b.jsonl` is `--val_inputs '["a.jsonl"]' --val_inputs+ b.jsonl`.

    Which options take a value, and of what kind, is read from `parser`.
    """
    kinds = _option_kinds(parser)
    options: list[str] = []
    positionals: list[str] = []
    given_lists: set[str] = set()
    index = 0
    while index < len(argv):
        token = argv[index]
        index += 1
        if not token.startswith("-"):
            positionals.append(token)
            continue
        option, attached, value = token.partition("=")
        kind = kinds.get(option, "value")
        if attached:
            options.extend(_list_option(option, value, given_lists) if kind == "list" else [token])
        elif kind == "flag":
            options.append(token)
        elif kind == "bool":
            following = argv[index] if index < len(argv) else None
            given = following is not None and following.lower() in BOOL_WORDS
            options.extend([token, following if given else "true"])
            index += int(given)
        elif index == len(argv):
            options.append(token)  # the parser says what is missing
        elif kind == "list" and option in GREEDY_LISTS:
            while index < len(argv) and not argv[index].startswith("-"):
                options.extend(_list_option(option, argv[index], given_lists))
                index += 1
        else:
            value = argv[index]
            index += 1
            options.extend(_list_option(option, value, given_lists) if kind == "list" else [token, value])
    if positionals:
        options.extend(_list_option("--inputs", json.dumps(positionals), given_lists))
    return options


def _option_kinds(parser: ArgumentParser) -> dict[str, str]:
    """For each option string: "flag" (no value), "bool", "list" (of items) or "value"."""
    kinds = {}
    for option, action in parser._option_string_actions.items():
        # jsonargparse keeps an argument's type on its action; options without one take a plain value.
        typehint = _without_none(getattr(action, "_typehint", None))
        if action.nargs == 0 or option in ATTACHED_VALUE_ONLY:
            kinds[option] = "flag"
        elif typehint is bool:
            kinds[option] = "bool"
        elif typing.get_origin(typehint) is list and not option.endswith("+"):
            kinds[option] = "list"
        else:
            kinds[option] = "value"
    return kinds


def _without_none(typehint: Any) -> Any:
    """`X` for `X | None`; other types unchanged."""
    if typing.get_origin(typehint) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(typehint) if arg is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return typehint


def _list_option(option: str, value: str, given_lists: set[str]) -> list[str]:
    """A list option's arguments: a YAML list is kept, a bare word is one item; a repeat appends."""
    try:
        is_list = isinstance(yaml.safe_load(value), list)
    except yaml.YAMLError:
        is_list = False
    if option not in given_lists:
        given_lists.add(option)
        return [option, value if is_list else json.dumps([value])]
    return [option + "+", value]


def main(argv: list[str]) -> None:
    """Parse `argv`, run prepare, print the summary table."""
    parser = build_parser()
    args = parser.parse_args(rewrite_argv(parser, argv))
    if not args.inputs:
        parser.error("name at least one input (a file, directory, glob, or python-stdlib)")
    if args.num_workers is not None:
        if args.num_workers < 1:
            parser.error(f"--num_workers must be at least 1, got {args.num_workers}")
        # Read by the tokenizer's thread pool when it first starts, which is after this point.
        os.environ["RAYON_NUM_THREADS"] = str(args.num_workers)
    if args.num_proc < 1:
        parser.error(f"--num_proc must be at least 1, got {args.num_proc}")
    if args.tasks is not None and args.tasks < 1:
        parser.error(f"--tasks must be at least 1, got {args.tasks}")
    # The dataclass options are namespaces until instantiated; invalid values raise ValueError here.
    args = parser.instantiate(args) if hasattr(parser, "instantiate") else parser.instantiate_classes(args)
    manifest = prepare(
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
        decontamination=dataclasses.replace(
            args.decontamination, files=[*args.decontamination.files, *args.decontaminate]
        ),
        num_proc=args.num_proc,
        tasks=args.tasks,
        work_dir=args.work_dir,
        slurm=args.slurm,
    )
    if manifest is None:
        print(f"submitted to Slurm: {args.output_dir} appears when the merge job ends")
        return
    print("\n".join(summary_lines(manifest)))
