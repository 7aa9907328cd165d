"""`lit-pretrain compare RUN_DIR... | SWEEP_DIR`: a table and overlaid loss curves of several runs.

The work is `lit_pretrain.experiments.compare.write_comparison`; this module only parses and prints.
"""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ArgumentParser

from lit_pretrain.experiments.compare import write_comparison


def main(argv: list[str]) -> None:
    """Parse `argv` (`RUN_DIR... [--output_dir DIR]`), write the comparison and print its table."""
    parser = ArgumentParser(
        prog="lit-pretrain compare",
        description="Compare training runs: parameters, tokens, FLOPs, losses, throughput; loss curves.",
    )
    parser.add_argument("runs", type=str, nargs="+", help="run directories or a sweep's output_dir")
    parser.add_argument(
        "--output_dir",
        type=str | None,
        default=None,
        help="where to write (default: SWEEP_DIR/compare for one directory, else ./compare)",
    )
    options = parser.parse_args(argv)
    runs = options.runs
    output_dir = options.output_dir or (Path(runs[0]) / "compare" if len(runs) == 1 else Path("compare"))
    table, files = write_comparison(runs, output_dir)
    print(table)
    for path in files:
        print(f"wrote {path}")
