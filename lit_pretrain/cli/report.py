"""`lit-pretrain report RUN_DIR`: plots and a Markdown summary of a training run, from its TensorBoard logs.

The work is `lit_pretrain.experiments.report.write_report_files`; this module only parses and prints.
"""

from __future__ import annotations

from jsonargparse import ArgumentParser

from lit_pretrain.experiments.report import write_report_files


def main(argv: list[str]) -> None:
    """Parse `argv` (`RUN_DIR [--output_dir DIR]`), write the report and print where it went."""
    parser = ArgumentParser(
        prog="lit-pretrain report",
        description="Plot a training run's TensorBoard scalars and summarise them in README.md.",
    )
    parser.add_argument("run_dir", type=str, help="the run's --trainer.default_root_dir")
    parser.add_argument(
        "--output_dir", type=str | None, default=None, help="where to write (default: RUN_DIR/report)"
    )
    options = parser.parse_args(argv)
    readme, *images = write_report_files(options.run_dir, options.output_dir)
    print(f"Report: {readme}")
    for path in [readme, *images]:
        print(f"  wrote {path}")
