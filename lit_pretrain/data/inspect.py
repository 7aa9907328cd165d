"""A prepared dataset's training windows decoded back to text, for `lit-pretrain data inspect`."""

from __future__ import annotations

from pathlib import Path

from litdata import StreamingDataset
from litdata.streaming.item_loader import TokensLoader
from tokenizers import Tokenizer

from lit_pretrain.data.manifest import TOKENIZER_NAME, read_manifest


def decoded_sequences(
    data_dir: str | Path, num_sequences: int, seq_len: int, split: str = "train"
) -> list[tuple[str, str]]:
    """(source, text) of the first `num_sequences` windows of each source of a split, decoded."""
    manifest = read_manifest(data_dir)
    tokenizer = Tokenizer.from_file(str(Path(data_dir) / TOKENIZER_NAME))
    sequences = []
    for name, counts in manifest["sources"].items():
        if counts[split]["tokens"] < seq_len:
            continue
        dataset = StreamingDataset(
            str(Path(data_dir) / split / name), item_loader=TokensLoader(block_size=seq_len)
        )
        for index in range(min(num_sequences, len(dataset))):
            sequences.append((name, tokenizer.decode(dataset[index].tolist(), skip_special_tokens=False)))
    return sequences
