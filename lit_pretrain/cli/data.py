"""`lit-pretrain data inspect DIR`: the manifest's statistics and a few decoded training sequences."""

from __future__ import annotations

from jsonargparse import ArgumentParser
from litdata import StreamingDataset
from litdata.streaming.item_loader import TokensLoader
from tokenizers import Tokenizer

from lit_pretrain.data.manifest import TOKENIZER_NAME, print_summary, read_manifest


def decoded_sequences(
    data_dir: str, num_sequences: int, seq_len: int, split: str = "train"
) -> list[tuple[str, str]]:
    """(source, text) of the first `num_sequences` windows of each source of a split, decoded."""
    manifest = read_manifest(data_dir)
    tokenizer = Tokenizer.from_file(f"{data_dir}/{TOKENIZER_NAME}")
    sequences = []
    for name, counts in manifest["sources"].items():
        if counts[split]["tokens"] < seq_len:
            continue
        dataset = StreamingDataset(f"{data_dir}/{split}/{name}", item_loader=TokensLoader(block_size=seq_len))
        for index in range(min(num_sequences, len(dataset))):
            sequences.append((name, tokenizer.decode(dataset[index].tolist(), skip_special_tokens=False)))
    return sequences


def main(argv: list[str]) -> None:
    """Parse `argv` (`inspect DIR ...`) and print."""
    parser = ArgumentParser(prog="lit-pretrain data", description="Look inside a prepared dataset.")
    subcommands = parser.add_subcommands()
    inspect = ArgumentParser(description="Print the manifest's statistics and decode a few sequences.")
    inspect.add_argument("data_dir", type=str, help="a directory written by `lit-pretrain prepare`")
    inspect.add_argument("--num_sequences", type=int, default=2, help="sequences decoded per source")
    inspect.add_argument("--seq_len", type=int, default=64, help="tokens per decoded sequence")
    inspect.add_argument("--split", type=str, default="train", help="train or val")
    subcommands.add_subcommand("inspect", inspect)
    args = parser.parse_args(argv)
    options = args.inspect
    try:
        manifest = read_manifest(options.data_dir)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"lit-pretrain data inspect: error: {err}") from err
    print(
        f"{options.data_dir}: vocab {manifest['vocab_size']:,} ({manifest['dtype']}), tokenizer sha256 "
        f"{manifest['tokenizer_sha256'][:16]}..., EOS id {manifest['eos_id']}"
    )
    print_summary(manifest)
    for name, text in decoded_sequences(
        options.data_dir, options.num_sequences, options.seq_len, options.split
    ):
        print(f"\n--- {options.split}/{name} ({options.seq_len} tokens) ---\n{text}")
