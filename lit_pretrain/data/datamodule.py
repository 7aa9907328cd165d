"""`PretrainDataModule`: streams prepared token shards with litdata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming.item_loader import TokensLoader

from lit_pretrain.data.manifest import TOKENIZER_NAME, read_manifest


class PretrainDataModule(L.LightningDataModule):
    """Fixed-length token windows (`seq_len + 1` tokens: inputs and shifted targets) from `prepare` output."""

    def __init__(
        self,
        data_dir: str = "data/python-stdlib",
        seq_len: int = 256,
        micro_batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__()
        if seq_len < 1 or micro_batch_size < 1:
            raise ValueError(
                f"seq_len and micro_batch_size must be positive, got {seq_len} and {micro_batch_size}"
            )
        self.data_dir = Path(data_dir)
        self.seq_len = seq_len
        self.micro_batch_size = micro_batch_size
        self.val_batch_size = val_batch_size or micro_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._manifest: dict[str, Any] | None = None

    @property
    def manifest(self) -> dict[str, Any]:
        """The dataset's manifest; reading it is the first check that the data directory is usable."""
        if self._manifest is None:
            self._manifest = read_manifest(self.data_dir)
        return self._manifest

    @property
    def vocab_size(self) -> int:
        """Vocabulary size of the tokenizer the data was made with."""
        return int(self.manifest["vocab_size"])

    def tokenizer_json(self) -> str:
        """The tokenizer the data was made with, as JSON text (stored in checkpoints for generation)."""
        return (self.data_dir / TOKENIZER_NAME).read_text()

    def _dataset(self, split: str, shuffle: bool) -> StreamingDataset:
        tokens = self.manifest["splits"].get(split, {}).get("tokens", 0)
        if tokens < self.seq_len + 1:
            raise ValueError(
                f"the {split} split of {self.data_dir} has {tokens:,} tokens, fewer than one sequence of "
                f"seq_len + 1 = {self.seq_len + 1}: lower --data.seq_len or prepare more "
                + ("validation data (--val_fraction)" if split == "val" else "data")
            )
        return StreamingDataset(
            input_dir=str((self.data_dir / split).resolve()),
            item_loader=TokensLoader(block_size=self.seq_len + 1),
            shuffle=shuffle,
            drop_last=shuffle,
            seed=self.seed,
        )

    def setup(self, stage: str) -> None:
        """Validate the data directory early so a bad path fails before any model is built."""
        self.manifest  # noqa: B018 - raises a clear error for a missing or unfinished dataset

    def train_dataloader(self) -> StreamingDataLoader:
        """Shuffled windows; its state_dict (position, epoch, seed) is saved in every checkpoint."""
        return StreamingDataLoader(
            self._dataset("train", shuffle=True),
            batch_size=self.micro_batch_size,
            num_workers=self.num_workers,
            drop_last=True,
        )

    def val_dataloader(self) -> StreamingDataLoader:
        """Validation windows in a fixed order, so every evaluation sees the same tokens."""
        return StreamingDataLoader(
            self._dataset("val", shuffle=False),
            batch_size=self.val_batch_size,
            num_workers=self.num_workers,
        )
