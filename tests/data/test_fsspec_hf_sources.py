"""Inputs through fsspec URLs (memory://, file://) read like local ones, and hf:NAME:CONFIG:SPLIT selects a
configuration and a split; all offline."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from lit_pretrain.data.prepare import prepare, read_documents
from lit_pretrain.data.sources import HfSpec, ReadReport, documents_for, parse_hf_spec

fsspec = pytest.importorskip("fsspec")


def jsonl(*records: object) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def parquet_bytes(texts: list[str | None]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": texts}), sink, row_group_size=2)
    return sink.getvalue().to_pybytes()


TREE = {
    "a.jsonl": jsonl({"text": "first line of a"}, {"text": "second line of a"}),
    "b.jsonl.gz": gzip.compress(jsonl({"text": "gzipped record"})),
    "sub/c.jsonl.zst": zstandard.ZstdCompressor().compress(jsonl({"text": "zstd record"})),
    "sub/d.parquet": parquet_bytes(["row zero", "row one", "row two"]),
    "sub/e.txt": b"a whole text file\n",
    "sub/f.md": b"# a markdown file\n",
    "ignored.json": b"{}",
}


@pytest.fixture
def bucket() -> Iterator[str]:
    """A fresh directory on fsspec's in-memory filesystem (shared by the whole process, so named uniquely)."""
    root = f"/bucket-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def put_tree(root: str, files: dict[str, bytes]) -> None:
    fs = fsspec.filesystem("memory")
    for relative, data in files.items():
        fs.pipe(f"{root}/corpus/{relative}", data)


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for relative, data in files.items():
        path = root / "corpus" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root / "corpus"


# --- fsspec URLs -------------------------------------------------------------------------------------


def test_a_remote_directory_reads_like_the_same_local_directory(bucket: str, tmp_path: Path):
    put_tree(bucket, TREE)
    local = read_documents([str(write_tree(tmp_path, TREE))], None)
    remote = read_documents([f"memory://{bucket}/corpus"], None)
    assert [(d.id, d.source, d.text) for d in remote] == [(d.id, d.source, d.text) for d in local]
    assert [d.id for d in remote][:3] == ["corpus:a.jsonl:1", "corpus:a.jsonl:2", "corpus:b.jsonl.gz:1"]
    assert remote[0].origin == f"memory://{bucket}/corpus/a.jsonl:1"
    assert remote[4].origin == f"memory://{bucket}/corpus/sub/d.parquet:row0"
    assert remote[-1].origin == f"memory://{bucket}/corpus/sub/f.md"


def test_remote_globs_and_single_files(bucket: str):
    put_tree(bucket, TREE)
    texts = [d.text for d in read_documents([f"memory://{bucket}/**/*.jsonl*"], None)]
    assert texts == ["first line of a", "second line of a", "gzipped record", "zstd record"]
    single = read_documents([f"memory://{bucket}/corpus/sub/d.parquet"], None)
    assert [d.id for d in single] == ["d:d.parquet:row0", "d:d.parquet:row1", "d:d.parquet:row2"]
    assert documents_for(f"memory://{bucket}/corpus/sub/*.txt", ReadReport())[0][0] == "sub"
    with pytest.raises(FileNotFoundError, match=r"memory://.*/nothing' matches no file with extension"):
        read_documents([f"memory://{bucket}/nothing"], None)


def test_malformed_remote_records_are_counted_with_url_and_line(bucket: str):
    put_tree(
        bucket,
        {
            "bad.jsonl": b'{"text": "good"}\n{"text": "unterminated\n\n{"body": "no text"}\n',
            "holes.parquet": parquet_bytes(["kept", None, "kept too"]),
        },
    )
    report = ReadReport()
    documents = read_documents([f"memory://{bucket}/corpus"], None, report)
    assert [d.text for d in documents] == ["good", "kept", "kept too"]
    url = f"memory://{bucket}/corpus"
    assert report.malformed_records == 3
    assert report.malformed_locations[0].startswith(f"{url}/bad.jsonl:2: invalid JSON")
    assert report.malformed_locations[1:] == [
        f"{url}/bad.jsonl:4: no string at text field 'text'",
        f"{url}/holes.parquet:row1: no string at text field 'text' (null)",
    ]


def test_a_broken_remote_parquet_file_names_its_url(bucket: str):
    put_tree(bucket, {"junk.parquet": b"not parquet"})
    with pytest.raises(ValueError, match=r"memory://.*/junk\.parquet is not a readable Parquet file"):
        read_documents([f"memory://{bucket}/corpus"], None)


def test_file_urls_give_the_ids_of_plain_paths(tmp_path: Path):
    corpus = write_tree(tmp_path, TREE)
    by_path = read_documents([str(corpus)], None)
    by_url = read_documents([corpus.as_uri()], None)
    assert [(d.id, d.text) for d in by_url] == [(d.id, d.text) for d in by_path]
    assert by_url[0].origin == f"{corpus.as_uri()}/a.jsonl:1"


def test_prepare_reads_a_remote_input_and_reports_its_malformed_records(bucket: str, tmp_path: Path):
    lines = [
        json.dumps({"text": f"Document {i} has some words in it, enough for the filters."}) for i in range(30)
    ]
    lines[4] = "{broken"
    put_tree(bucket, {"web.jsonl": "\n".join(lines).encode() + b"\n"})
    manifest = prepare([f"memory://{bucket}/corpus/web.jsonl"], tmp_path / "out", vocab_size=300)
    assert list(manifest["sources"]) == ["web"]
    assert manifest["malformed_records"]["count"] == 1
    assert manifest["malformed_records"]["first"][0].startswith(
        f"memory://{bucket}/corpus/web.jsonl:5: invalid JSON"
    )


# --- Hugging Face configurations ----------------------------------------------------------------------

CONFIGS_README = """---
configs:
- config_name: first
  data_files:
  - split: train
    path: first/train.jsonl
  - split: test
    path: first/test.jsonl
- config_name: second
  data_files:
  - split: train
    path: second/train.jsonl
---
A dataset with two configurations, declared as on the Hub.
"""


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No download can happen: the hub is switched off for datasets and huggingface_hub."""
    pytest.importorskip("datasets")
    import datasets
    import huggingface_hub

    for variable in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)


def configs_dataset(root: Path) -> Path:
    directory = root / "two_configs"
    files = {
        "first/train.jsonl": jsonl(
            {"text": "first config, train row 0"}, {"text": "first config, train row 1"}
        ),
        "first/test.jsonl": jsonl({"text": "first config, test row 0"}),
        "second/train.jsonl": jsonl({"text": "second config, train row 0", "uid": "s0"}),
        "README.md": CONFIGS_README.encode(),
    }
    for relative, data in files.items():
        (directory / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / relative).write_bytes(data)
    return directory


def test_hf_config_and_split_select_the_data(tmp_path: Path, offline: None):
    directory = configs_dataset(tmp_path)
    train = read_documents([f"hf:{directory}:first:train"], None)
    assert [d.text for d in train] == ["first config, train row 0", "first config, train row 1"]
    assert train[1].source == "two_configs-first" and train[1].id == "two_configs-first:train:row1"
    assert train[0].origin == f"hf:{directory}:first:train:row0"
    test = read_documents([f"hf:{directory}:first:test"], None)
    assert [d.text for d in test] == ["first config, test row 0"]
    second = read_documents([f"hf:{directory}:second:"], None, id_field="uid")
    assert [(d.id, d.text) for d in second] == [("two_configs-second:s0", "second config, train row 0")]
    # Two configurations are two sources: both can be inputs of one run.
    names = [
        name
        for spec in ("first:train", "second:train")
        for name, _ in documents_for(f"hf:{directory}:{spec}", ReadReport())
    ]
    assert names == ["two_configs-first", "two_configs-second"]


def test_hf_without_a_needed_config_or_with_a_wrong_one_says_how_to_pick(tmp_path: Path, offline: None):
    directory = configs_dataset(tmp_path)
    with pytest.raises(ValueError, match=r"(?s)configuration 'third' split 'train': .*hf:NAME:CONFIG:SPLIT"):
        read_documents([f"hf:{directory}:third:train"], None)
    with pytest.raises(ValueError, match=r"(?s)split 'train': .*first.*second.*hf:NAME:CONFIG:SPLIT"):
        read_documents([f"hf:{directory}"], None)


def test_a_config_saved_to_disk_is_read_offline(tmp_path: Path, offline: None):
    """The offline workflow: load a configuration on a connected machine, save_to_disk, read the copy."""
    import datasets

    loaded = datasets.load_dataset(
        str(configs_dataset(tmp_path)), name="first", cache_dir=str(tmp_path / "cache")
    )
    loaded.save_to_disk(str(tmp_path / "first-copy"))
    documents = read_documents([f"hf:{tmp_path / 'first-copy'}:test"], None)
    assert [(d.id, d.text) for d in documents] == [("first-copy:test:row0", "first config, test row 0")]


def test_hf_spec_parsing_with_configs(tmp_path: Path):
    assert parse_hf_spec("hf:user/corpus") == HfSpec("user/corpus", None, None)
    assert parse_hf_spec("hf:user/corpus:validation") == HfSpec("user/corpus", None, "validation")
    assert parse_hf_spec("hf:user/corpus:en:validation") == HfSpec("user/corpus", "en", "validation")
    assert parse_hf_spec("hf:user/corpus:en:") == HfSpec("user/corpus", "en", None)
    assert parse_hf_spec("hf:user/corpus::test") == HfSpec("user/corpus", None, "test")
    with pytest.raises(ValueError, match="too many parts"):
        parse_hf_spec("hf:user/corpus:en:train:extra")
    datasets = pytest.importorskip("datasets")
    saved = tmp_path / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["t"]})}).save_to_disk(str(saved))
    assert parse_hf_spec(f"hf:{saved}:train") == HfSpec(str(saved), None, "train")
    with pytest.raises(ValueError, match="save_to_disk directory, which has no configurations"):
        parse_hf_spec(f"hf:{saved}:en:train")


def test_hf_url_is_read_through_fsspec_not_as_a_dataset_name(monkeypatch: pytest.MonkeyPatch):
    calls = []
    monkeypatch.setattr(
        "lit_pretrain.data.remote_sources.remote_input_files", lambda url, *args, **kwargs: calls.append(url)
    )
    name, _ = documents_for("hf://datasets/user/corpus/data/train-*.parquet", ReadReport())[0]
    assert name == "train" and calls == ["hf://datasets/user/corpus/data/train-*.parquet"]
