"""Training-time mixing of sources by weight, named validation sets, and fingerprint checks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lit_pretrain.data.datamodule import PretrainDataModule
from lit_pretrain.data.prepare import prepare

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
]


def write_corpus(directory: Path, seed: int, documents: int = 60) -> Path:
    rng = random.Random(seed)
    directory.mkdir(parents=True)
    with open(directory / "docs.jsonl", "w") as out:
        for index in range(documents):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(300, 600)))
            out.write(json.dumps({"text": f"{directory.name} {index}: {text}"}) + "\n")
    return directory


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mix")
    first = prepare(
        [str(write_corpus(root / "news", 1))], root / "news-data", vocab_size=300, val_fraction=0.1
    )
    assert first["tokens_train"] > 20_000
    prepare(
        [str(write_corpus(root / "books", 2))],
        root / "books-data",
        tokenizer=root / "news-data" / "tokenizer.json",
        val_fraction=0.1,
    )
    return root / "news-data", root / "books-data"


def drawn_sources(datamodule: PretrainDataModule, samples: int) -> list[int]:
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    drawn: list[int] = []
    epoch = 0
    while len(drawn) < samples:
        loader.dataset.set_epoch(epoch)
        for batch in loader:
            drawn.extend(batch["source"].tolist())
            if len(drawn) >= samples:
                break
        epoch += 1
    return drawn[:samples]


def test_observed_proportions_follow_the_weights(two_datasets):
    news, books = two_datasets
    datamodule = PretrainDataModule(
        data_dir=[str(news), str(books)], weights={"news": 0.7, "books": 0.3}, seq_len=8, micro_batch_size=50
    )
    drawn = drawn_sources(datamodule, 10_000)
    names = [s.name for s in datamodule.train_sources]
    share = {name: drawn.count(index) / len(drawn) for index, name in enumerate(names)}
    assert share["news"] == pytest.approx(0.7, abs=0.02) and share["books"] == pytest.approx(0.3, abs=0.02)


def test_default_weights_are_token_shares(two_datasets):
    datamodule = PretrainDataModule(data_dir=[str(p) for p in two_datasets], seq_len=8)
    weights = datamodule.source_weights()
    tokens = {s.name: s.train_tokens for s in datamodule.sources}
    assert weights["news"] == pytest.approx(tokens["news"] / sum(tokens.values()))


def test_weights_must_name_every_source(two_datasets):
    datamodule = PretrainDataModule(data_dir=[str(p) for p in two_datasets], weights={"news": 1.0}, seq_len=8)
    with pytest.raises(ValueError, match=r"no weight for \['books'\]"):
        datamodule.setup("fit")
    datamodule = PretrainDataModule(data_dir=[str(p) for p in two_datasets], weights={"newz": 1.0}, seq_len=8)
    with pytest.raises(ValueError, match=r"unknown sources \['newz'\]; the sources are \['news', 'books'\]"):
        datamodule.setup("fit")


def test_validation_has_one_loader_per_source(two_datasets):
    datamodule = PretrainDataModule(data_dir=[str(p) for p in two_datasets], seq_len=8)
    datamodule.setup("validate")
    assert [s.name for s in datamodule.val_sources] == ["news", "books"]
    assert len(datamodule.val_dataloader()) == 2


def test_datasets_with_different_tokenizers_are_refused(two_datasets, tmp_path: Path):
    other = prepare([str(write_corpus(tmp_path / "poems", 3))], tmp_path / "poems-data", vocab_size=280)
    assert other["vocab_size"] == 280
    datamodule = PretrainDataModule(data_dir=[str(two_datasets[0]), str(tmp_path / "poems-data")], seq_len=8)
    with pytest.raises(
        ValueError, match=r"tokenizer_sha256 differs: '[0-9a-f]+' in .*news-data but '[0-9a-f]+' in"
    ):
        datamodule.setup("fit")


def test_every_rank_sees_the_whole_validation_split_for_the_sampler_to_share(small_corpus):
    """Ranks with validation loaders of different lengths run different numbers of batches: under FSDP2,
    whose forward gathers weights from every rank, the run hangs at its first validation."""
    from lit_pretrain._compat.litdata import data_parallel_env, detected_layout
    from lit_pretrain.data.datamodule import PretrainDataModule

    lengths = []
    for rank in (0, 1):
        with detected_layout(data_parallel_env(2, rank, 1)):
            data = PretrainDataModule(str(small_corpus), seq_len=32, num_workers=0)
            data.setup("fit")
            lengths.append([len(loader.dataset) for loader in data.val_dataloader()])
    data = PretrainDataModule(str(small_corpus), seq_len=32, num_workers=0)
    data.setup("fit")
    assert lengths[0] == lengths[1] == [len(loader.dataset) for loader in data.val_dataloader()]
