"""`PretrainDataModule`: streams prepared token shards with litdata, mixing sources by weight."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from litdata import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset
from litdata.streaming.item_loader import TokensLoader
from torch.utils.data import DataLoader

from lit_pretrain._compat.litdata import WorkerCountResumingDataset, data_parallel_env
from lit_pretrain.data.distributed import data_parallel_size_and_rank
from lit_pretrain.data.manifest import TOKENIZER_NAME, check_fingerprints_match, fingerprint, read_manifest
from lit_pretrain.data.streaming import ConsumedStateLoader, TagWithSource, WindowsByIndex


@dataclass(frozen=True)
class SourceShards:
    """One source of one prepared dataset: where its shards are and how many tokens each split has."""

    name: str
    data_dir: Path
    train_tokens: int
    val_tokens: int

    def split_dir(self, split: str) -> Path:
        """Directory of the litdata shards of `split`."""
        return self.data_dir / split / self.name


@dataclass(frozen=True)
class DataSpec:
    """What the training side needs to know about the data, as one typed value."""

    data_dirs: tuple[Path, ...]
    vocab_size: int
    seq_len: int
    micro_batch_size: int
    num_workers: int
    seed: int
    elastic_resume: bool
    source_weights: dict[str, float]
    train_tokens: dict[str, int]  # training sources, in mixing order
    val_sources: tuple[str, ...]
    manifest: dict[str, Any]
    tokenizer_json: str

    @property
    def data_dir(self) -> Path:
        """The first dataset directory (whose tokenizer checkpoints store)."""
        return self.data_dirs[0]

    @property
    def train_sources(self) -> tuple[str, ...]:
        """Names of the sources training draws from, in the order of the batch's `source` index."""
        return tuple(self.train_tokens)


def data_spec(trainer: L.Trainer | None) -> DataSpec | None:
    """The spec of the trainer's `PretrainDataModule`, or None when it trains on other data."""
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    return datamodule.spec() if isinstance(datamodule, PretrainDataModule) else None


def accumulation_steps(global_batch_size: int, micro_batch_size: int, data_parallel_size: int) -> int:
    """Micro-batches per optimizer step so that every step sees `global_batch_size` sequences."""
    per_pass = micro_batch_size * data_parallel_size
    if global_batch_size < 1 or global_batch_size % per_pass:
        raise ValueError(
            f"--data.global_batch_size {global_batch_size} must be a positive multiple of micro_batch_size "
            f"{micro_batch_size} x {data_parallel_size} data-parallel processes (devices x num_nodes / "
            f"tensor_parallel_size) = {per_pass}"
        )
    return global_batch_size // per_pass


class PretrainDataModule(L.LightningDataModule):
    """Windows of `seq_len + 1` tokens (inputs and shifted targets) from one or more `prepare` outputs.

    Training mixes all sources of all `data_dir`s, by `weights` (source name -> weight) or, without them,
    in proportion to their tokens. Validation keeps each source separate, so each is logged on its own.
    """

    def __init__(
        self,
        data_dir: str | list[str] = "data/python-stdlib",
        weights: dict[str, float] | None = None,
        seq_len: int | None = None,
        micro_batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
        elastic_resume: bool = False,
        global_batch_size: int | None = None,
    ) -> None:
        """`seq_len` is the tokens per sequence (`lit-pretrain fit` makes it the model's block_size when unset).

        `global_batch_size` (sequences per optimizer step, over all processes) sets the gradient
        accumulation: global / (micro_batch_size x data-parallel processes), which must divide evenly.

        `elastic_resume` lets a checkpoint resume with another world size or worker count (see
        docs/checkpoints.md): litdata spreads the rest of the epoch over the new workers without repeats.
        """
        super().__init__()
        if seq_len is None:  # `lit-pretrain fit` fills it from the model's block_size
            raise ValueError("--data.seq_len is not set: give the number of tokens per training sequence")
        if seq_len < 1 or micro_batch_size < 1:
            raise ValueError(
                f"seq_len and micro_batch_size must be positive, got {seq_len} and {micro_batch_size}"
            )
        self.data_dirs = [Path(d) for d in ([data_dir] if isinstance(data_dir, str | Path) else data_dir)]
        if not self.data_dirs:
            raise ValueError("data_dir names no dataset")
        self.weights = dict(weights) if weights else None
        self.seq_len = seq_len
        self.micro_batch_size = micro_batch_size
        self.val_batch_size = val_batch_size or micro_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.elastic_resume = elastic_resume
        self.global_batch_size = global_batch_size
        self._manifests: list[dict[str, Any]] | None = None
        self._train_loader: ConsumedStateLoader | None = None
        self._spec: DataSpec | None = None

    @property
    def data_dir(self) -> Path:
        """The first dataset directory (the one whose tokenizer is stored in checkpoints)."""
        return self.data_dirs[0]

    @property
    def manifests(self) -> list[dict[str, Any]]:
        """Every dataset's manifest; reading them checks the directories and that their tokens agree."""
        if self._manifests is None:
            manifests = [read_manifest(d) for d in self.data_dirs]
            for directory, manifest in zip(self.data_dirs[1:], manifests[1:], strict=True):
                check_fingerprints_match(
                    fingerprint(manifests[0]), fingerprint(manifest), str(self.data_dirs[0]), str(directory)
                )
            self._manifests = manifests
        return self._manifests

    @property
    def manifest(self) -> dict[str, Any]:
        """The first dataset's manifest (tokenizer, EOS id, counts)."""
        return self.manifests[0]

    @property
    def vocab_size(self) -> int:
        """Vocabulary size of the tokenizer the data was made with."""
        return int(self.manifest["vocab_size"])

    def tokenizer_json(self) -> str:
        """The tokenizer the data was made with, as JSON text (stored in checkpoints for generation)."""
        return (self.data_dir / TOKENIZER_NAME).read_text()

    @property
    def sources(self) -> list[SourceShards]:
        """All sources of all datasets, in order; names must be unique across datasets."""
        sources: list[SourceShards] = []
        for directory, manifest in zip(self.data_dirs, self.manifests, strict=True):
            for name, counts in manifest["sources"].items():
                if any(s.name == name for s in sources):
                    raise ValueError(
                        f"source {name!r} appears in two datasets ({directory}): rename one input"
                    )
                sources.append(
                    SourceShards(name, directory, counts["train"]["tokens"], counts["val"]["tokens"])
                )
        return sources

    def spec(self) -> DataSpec:
        """This data as the training side sees it (read once: the module and callbacks all ask for it)."""
        if self._spec is None:
            self._spec = self._read_spec()
        return self._spec

    def _read_spec(self) -> DataSpec:
        return DataSpec(
            data_dirs=tuple(self.data_dirs),
            vocab_size=self.vocab_size,
            seq_len=self.seq_len,
            micro_batch_size=self.micro_batch_size,
            num_workers=self.num_workers,
            seed=self.seed,
            elastic_resume=self.elastic_resume,
            source_weights=self.source_weights(),
            train_tokens={s.name: s.train_tokens for s in self.train_sources},
            val_sources=tuple(s.name for s in self.val_sources),
            manifest=self.manifest,
            tokenizer_json=self.tokenizer_json(),
        )

    def _window_count(self, tokens: int) -> int:
        return tokens // (self.seq_len + 1)

    @property
    def train_sources(self) -> list[SourceShards]:
        """Sources that training draws from (weight > 0 and at least one full window)."""
        weights = self.source_weights()
        return [s for s in self.sources if weights.get(s.name, 0) > 0]

    @property
    def val_sources(self) -> list[SourceShards]:
        """Sources with at least one full validation window, in order."""
        return [s for s in self.sources if self._window_count(s.val_tokens) > 0]

    def source_weights(self) -> dict[str, float]:
        """Normalised sampling weight per source: given weights, or each source's share of tokens."""
        sources = [s for s in self.sources if self._window_count(s.train_tokens) > 0]
        names = [s.name for s in self.sources]
        if self.weights is None:
            raw = {s.name: float(s.train_tokens) for s in sources}
        else:
            unknown = sorted(set(self.weights) - set(names))
            if unknown:
                raise ValueError(f"--data.weights names unknown sources {unknown}; the sources are {names}")
            missing = sorted(set(names) - set(self.weights))
            if missing:
                raise ValueError(
                    f"--data.weights gives no weight for {missing}: give every source one (0 excludes)"
                )
            raw = {s.name: float(self.weights[s.name]) for s in sources}
        total = sum(raw.values())
        if total <= 0:
            raise ValueError(
                f"no training data: every source has weight 0 or fewer than seq_len + 1 = {self.seq_len + 1} "
                f"train tokens in {', '.join(map(str, self.data_dirs))}"
            )
        return {name: weight / total for name, weight in raw.items() if weight > 0}

    def setup(self, stage: str) -> None:
        """Validate the data directories early, and derive gradient accumulation from the global batch."""
        self.source_weights()
        if self.global_batch_size is not None and self.trainer is not None:
            self.trainer.accumulate_grad_batches = accumulation_steps(
                self.global_batch_size, self.micro_batch_size, data_parallel_size_and_rank(self.trainer)[0]
            )
        if stage in ("fit", "validate") and not self.val_sources:
            tokens = sum(s.val_tokens for s in self.sources)
            raise ValueError(
                f"the validation split of {', '.join(map(str, self.data_dirs))} has {tokens:,} tokens, fewer than "
                f"one sequence of seq_len + 1 = {self.seq_len + 1} in any source: lower --data.seq_len or "
                "prepare with a larger --val_fraction"
            )

    def _dataset(
        self, source: SourceShards, index: int, split: str, shuffle: bool, split_over_ranks: bool = True
    ) -> StreamingDataset:
        dataset = WorkerCountResumingDataset(
            input_dir=str(source.split_dir(split).resolve()),
            item_loader=TokensLoader(block_size=self.seq_len + 1),
            shuffle=shuffle,
            drop_last=shuffle,
            seed=self.seed,
            transform=TagWithSource(index),
        )
        if not split_over_ranks:
            # Every rank sees every window (its length is the whole split's), for a sampler to split.
            dataset.distributed_env = data_parallel_env(1, 0, 1)
        elif self.trainer is not None:
            # litdata splits the data over all processes; tensor-parallel ranks of one group must read
            # the same windows, so it is told the data-parallel layout instead. Always as one node: told
            # of several, litdata reshuffles each node's chunks among that node's ranks from the second
            # epoch on, and a chunk that straddled two nodes in the first is then read by both
            # (duplicated windows, unequal shares; tests/parallel/test_multinode.py). One global shuffle
            # per epoch costs only cache locality for remote data.
            size, rank = data_parallel_size_and_rank(self.trainer)
            dataset.distributed_env = data_parallel_env(size, rank, 1)
        return dataset

    def train_dataloader(self) -> StreamingDataLoader:
        """Shuffled windows, sources mixed by weight; its state_dict is saved in every checkpoint."""
        weights = self.source_weights()
        datasets = [self._dataset(s, i, "train", shuffle=True) for i, s in enumerate(self.train_sources)]
        if len(datasets) == 1:
            dataset = datasets[0]
        else:
            dataset = CombinedStreamingDataset(
                datasets,
                seed=self.seed,
                weights=[weights[s.name] for s in self.train_sources],
                # Draw by weight until one source runs out, then start the next epoch.
                iterate_over_all=False,
            )
        self._train_loader = ConsumedStateLoader(
            dataset, batch_size=self.micro_batch_size, num_workers=self.num_workers, drop_last=True
        )
        return self._train_loader

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """A training batch is about to be used: advance the position that checkpoints save."""
        if self.trainer is not None and self.trainer.training and self._train_loader is not None:
            self._train_loader.mark_consumed()
        return batch

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per source with validation data, in a fixed order.

        Windows are read by index, so Lightning's DistributedSampler gives every rank a share. (litdata
        hands out whole chunks per rank, and a validation set is often a single chunk: the other ranks
        would get nothing.) With several ranks the sampler repeats a few windows to even out the shares.
        The dataset itself is not split by rank: its length must be the whole split's on every rank, or
        ranks run different numbers of batches, and under FSDP2 (collectives in every forward) hang.
        """
        return [
            DataLoader(
                WindowsByIndex(self._dataset(s, i, "val", shuffle=False, split_over_ranks=False)),
                batch_size=self.val_batch_size,
                num_workers=self.num_workers,
            )
            for i, s in enumerate(self.val_sources)
        ]
