"""`lit-pretrain VERB ...`: a table of verbs, each a module of lit_pretrain.cli with a `main(argv)`.

Every verb follows one convention for user errors (a missing file, a bad value, a checkpoint that does
not exist): one line `lit-pretrain VERB: error: ...` on stderr and exit status 1. A traceback is printed only for
bugs, or for every error with LIT_PRETRAIN_DEBUG=1.
"""

from __future__ import annotations

import importlib
import os
import sys

# verb -> (module under lit_pretrain.cli, one-line description, example)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "prepare": (
        "prepare",
        "turn raw text into tokenized litdata shards",
        "prepare INPUT... --output_dir DIR",
    ),
    "fit": ("fit", "pre-train", "fit --config configs/tiny.yaml"),
    "validate": ("fit", "evaluate on the validation split", "validate --config ... [--ckpt_path PATH]"),
    "data": ("data", "look inside a prepared dataset", "data inspect DIR"),
    "generate": ("generate", "sample text from a checkpoint", "generate --checkpoint PATH --prompt TEXT"),
    "evaluate": (
        "evaluate",
        "loss, bits per byte and multiple-choice accuracy of a checkpoint or HF model",
        "evaluate --checkpoint PATH | --hf_dir DIR [--text FILE...] [--tasks NAME...]",
    ),
    "estimate": (
        "estimate",
        "memory, FLOPs and time of a run, no GPU needed",
        "estimate --config ... [--gpu h100-sxm]",
    ),
    "export": (
        "export",
        "a checkpoint as a Hugging Face transformers model directory",
        "export --checkpoint PATH --output_dir DIR [--dtype bfloat16]",
    ),
    "sweep": (
        "sweep",
        "run every combination of a sweep file, each in its own directory",
        "sweep SWEEP.yaml [--dry-run] [--emit slurm]",
    ),
    "compare": (
        "compare",
        "a table and overlaid loss curves of several runs or a sweep",
        "compare RUN_DIR... | SWEEP_DIR [--output_dir DIR]",
    ),
    "scaling": (
        "scaling",
        "fit Chinchilla scaling-law constants and compute-optimal sizes",
        "scaling fit SWEEP_DIR | --from_csv runs.csv [--budget 1e21]",
    ),
    "report": (
        "report",
        "plots and a Markdown summary of a run's TensorBoard logs",
        "report RUN_DIR [--output_dir DIR]",
    ),
}
# Exceptions that mean "the input is wrong", not "the code is wrong".
USER_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, ValueError)
DEBUG_ENV = "LIT_PRETRAIN_DEBUG"
# Verbs whose code never imports Lightning skip its import check: importing Lightning (torch,
# torchmetrics, scipy) costs seconds of start-up, which `prepare` and every worker it spawns would pay.
WITHOUT_LIGHTNING = frozenset({"prepare"})


def usage() -> str:
    """The verbs, generated from the table."""
    width = max(map(len, COMMANDS))
    lines = [
        f"  {verb:<{width}}  {description}:  lit-pretrain {example}"
        for verb, (_, description, example) in COMMANDS.items()
    ]
    return (
        "usage: lit-pretrain COMMAND [options]\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\n`lit-pretrain COMMAND --help` lists a command's options."
    )


def main(argv: list[str] | None = None) -> None:
    """Dispatch to the verb named first on the command line."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    verb, rest = argv[0], argv[1:]
    if verb not in COMMANDS:
        sys.exit(f"lit-pretrain: unknown command {verb!r}\n\n{usage()}")
    from lit_pretrain.cli.environment import check_lightning_imports
    from lit_pretrain.cli.logs import configure_logging

    if verb not in WITHOUT_LIGHTNING:
        check_lightning_imports()
    configure_logging()
    module = importlib.import_module(f"lit_pretrain.cli.{COMMANDS[verb][0]}")
    try:
        if module.__name__ == "lit_pretrain.cli.fit":
            # LightningCLI reads sys.argv itself; passing it again as args makes it warn.
            module.main(None if from_command_line else argv)
        else:
            module.main(rest)
    except USER_ERRORS as err:
        if os.environ.get(DEBUG_ENV):
            raise
        raise SystemExit(f"lit-pretrain {verb}: error: {err}") from err
