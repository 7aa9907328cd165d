"""`lit-pretrain`: prepare data, train (fit/validate through LightningCLI) and generate text."""

from __future__ import annotations

import sys

USAGE = """usage: lit-pretrain COMMAND [options]

commands:
  prepare   turn raw text into tokenized litdata shards:  lit-pretrain prepare INPUT... --output_dir DIR
  fit       pre-train:                                   lit-pretrain fit --config configs/tiny.yaml
  validate  evaluate on the validation split:            lit-pretrain validate --config ... [--ckpt_path PATH]
  data      look inside a prepared dataset:              lit-pretrain data inspect DIR
  generate  sample text from a checkpoint:               lit-pretrain generate --checkpoint PATH --prompt TEXT
  estimate  memory, FLOPs and time of a run, no GPU needed: lit-pretrain estimate --config ... [--gpu h100-sxm]

`lit-pretrain COMMAND --help` lists a command's options."""


def main(argv: list[str] | None = None) -> None:
    """Dispatch to the command named first on the command line."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command in ("fit", "validate", "generate"):
        from lit_pretrain.cli.environment import check_lightning_imports

        check_lightning_imports()
    if command == "prepare":
        from lit_pretrain.cli.prepare import main as prepare_main

        prepare_main(rest)
    elif command == "data":
        from lit_pretrain.cli.data import main as data_main

        data_main(rest)
    elif command == "estimate":
        from lit_pretrain.experiments.estimate import main as estimate_main

        estimate_main(rest)
    elif command == "generate":
        from lit_pretrain.cli.generate import main as generate_main

        generate_main(rest)
    elif command in ("fit", "validate"):
        from lit_pretrain.cli.fit import run_lightning_cli

        # LightningCLI reads sys.argv itself; passing it again as args makes it warn.
        run_lightning_cli(None if from_command_line else argv)
    else:
        sys.exit(f"lit-pretrain: unknown command {command!r}\n\n{USAGE}")


if __name__ == "__main__":
    main()
