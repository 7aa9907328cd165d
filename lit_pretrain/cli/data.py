"""`lit-pretrain data inspect DIR`: the manifest's statistics and a few decoded training sequences."""

from __future__ import annotations

from jsonargparse import ArgumentParser

from lit_pretrain.data.inspect import decoded_sequences
from lit_pretrain.data.manifest import read_manifest, summary_lines


def main(argv: list[str]) -> None:
    """Parse `argv` (`inspect DIR ...`) and print."""
    parser = ArgumentParser(prog="lit-pretrain data", description="Look inside a prepared dataset.")
    subcommands = parser.add_subcommands()
    inspect = ArgumentParser(description="Print the manifest's statistics and decode a few sequences.")
    inspect.add_argument("data_dir", type=str, help="a directory written by `lit-pretrain prepare`")
    inspect.add_argument("--num_sequences", type=int, default=2, help="sequences decoded per source")
    inspect.add_argument("--seq_len", type=int, default=64, help="tokens per decoded sequence")
    inspect.add_argument("--split", type=str, choices=["train", "val"], default="train", help="train or val")
    subcommands.add_subcommand("inspect", inspect)
    options = parser.parse_args(argv).inspect
    manifest = read_manifest(options.data_dir)
    print(
        f"{options.data_dir}: vocab {manifest['vocab_size']:,} ({manifest['dtype']}), tokenizer sha256 "
        f"{manifest['tokenizer_sha256'][:16]}..., EOS id {manifest['eos_id']}"
    )
    print("\n".join(summary_lines(manifest)))
    for name, text in decoded_sequences(
        options.data_dir, options.num_sequences, options.seq_len, options.split
    ):
        print(f"\n--- {options.split}/{name} ({options.seq_len} tokens) ---\n{text}")
