"""Parquet files, code trees and Hugging Face datasets as inputs: order, ids, origins and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lit_pretrain.data.prepare import read_documents
from lit_pretrain.data.sources import (
    DEFAULT_CODE_EXTENSIONS,
    ReadReport,
    documents_for,
    parse_code_spec,
    parse_hf_spec,
    record_documents,
)
from tests.helpers.paths import REPO_ROOT


def texts(count: int) -> list[str]:
    return [f"Row {i} of the table has a little text in it.\n" for i in range(count)]


def write_parquet(path: Path, table: pa.Table, rows_per_group: int = 4) -> Path:
    pq.write_table(table, path, row_group_size=rows_per_group)
    return path


# --- Parquet -------------------------------------------------------------------------------------------


def test_parquet_reads_every_row_group_in_order_with_row_origins(tmp_path: Path):
    path = write_parquet(tmp_path / "table.parquet", pa.table({"text": texts(11), "n": list(range(11))}))
    assert pq.ParquetFile(path).num_row_groups == 3
    report = ReadReport()
    documents = read_documents([str(path)], None, report)
    assert [d.text for d in documents] == texts(11)
    assert [d.origin for d in documents] == [f"{path}:row{i}" for i in range(11)]
    assert documents[5].id == "table:table.parquet:row5" and documents[5].source == "table"
    assert report.documents_in == 11 and report.malformed_records == 0


def test_parquet_directory_is_read_next_to_jsonl(tmp_path: Path):
    write_parquet(tmp_path / "a.parquet", pa.table({"text": texts(3)}))
    (tmp_path / "b.jsonl").write_text('{"text": "a line of JSON"}\n')
    documents = read_documents([str(tmp_path)], None)
    assert [d.origin.rsplit("/", 1)[-1] for d in documents] == [
        "a.parquet:row0",
        "a.parquet:row1",
        "a.parquet:row2",
        "b.jsonl:1",
    ]


def test_parquet_dotted_struct_field_and_id_column(tmp_path: Path):
    table = pa.table(
        {
            "meta": [{"text": t, "lang": "en"} for t in texts(6)],
            "doc_id": [f"d{i}" for i in range(6)],
        }
    )
    path = write_parquet(tmp_path / "nested.parquet", table, rows_per_group=2)
    documents = read_documents([str(path)], None, text_field="meta.text", id_field="doc_id")
    assert [d.text for d in documents] == texts(6)
    assert [d.id for d in documents] == [f"nested:d{i}" for i in range(6)]


def test_parquet_column_named_with_a_dot_is_taken_whole(tmp_path: Path):
    path = write_parquet(tmp_path / "flat.parquet", pa.table({"meta.text": texts(2)}))
    documents = read_documents([str(path)], None, text_field="meta.text")
    assert [d.text for d in documents] == texts(2)


def test_parquet_without_the_text_column_names_file_and_columns(tmp_path: Path):
    path = write_parquet(tmp_path / "other.parquet", pa.table({"body": texts(2), "url": ["u", "v"]}))
    with pytest.raises(ValueError, match=r"other\.parquet has no column 'text' .*columns are: body, url"):
        read_documents([str(path)], None)
    with pytest.raises(ValueError, match=r"no column 'missing' for the id field"):
        read_documents([str(path)], None, text_field="body", id_field="missing")


def test_parquet_nulls_and_non_strings_are_malformed_with_row(tmp_path: Path):
    values = texts(6)
    values[1] = None
    values[4] = None
    path = write_parquet(tmp_path / "holes.parquet", pa.table({"text": values}), rows_per_group=3)
    report = ReadReport()
    documents = read_documents([str(path)], None, report)
    assert [d.origin for d in documents] == [f"{path}:row{i}" for i in (0, 2, 3, 5)]
    assert report.malformed_records == 2
    assert report.malformed_locations == [
        f"{path}:row1: no string at text field 'text' (null)",
        f"{path}:row4: no string at text field 'text' (null)",
    ]
    numbers = write_parquet(tmp_path / "numbers.parquet", pa.table({"text": [1, 2]}))
    report = ReadReport()
    assert list(documents_for(str(numbers), report)[0][1]) == []
    assert report.malformed_locations[0] == f"{numbers}:row0: no string at text field 'text' (int)"


def test_parquet_binary_text_is_decoded_and_invalid_utf8_counted(tmp_path: Path):
    table = pa.table({"text": pa.array([b"plain bytes", b"caf\xff"], type=pa.binary())})
    path = write_parquet(tmp_path / "bytes.parquet", table)
    report = ReadReport()
    documents = read_documents([str(path)], None, report)
    assert [d.text for d in documents] == ["plain bytes", "caf\ufffd"]
    assert report.invalid_utf8_documents == 1


def test_a_broken_parquet_file_is_a_clear_error(tmp_path: Path):
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=r"junk\.parquet is not a readable Parquet file"):
        read_documents([str(tmp_path / "junk.parquet")], None)


# --- Code trees ----------------------------------------------------------------------------------------


def make_tree(root: Path) -> Path:
    files = {
        "main.py": "print('hello')\n",
        "lib/util.rs": "fn main() {}\n",
        "lib/Widget.JAVA": "class Widget {}\n",
        "README.md": "# not code\n",
        "data.json": "{}\n",
        ".git/hooks/pre-commit.sh": "exit 0\n",
        ".venv/lib/site.py": "import os\n",
        "node_modules/pkg/index.js": "module.exports = 1\n",
        "lib/__pycache__/util.cpython-312.py": "stale\n",
        "web/app.ts": "export const x = 1\n",
    }
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def test_code_tree_default_extensions_skip_hidden_and_vendor_dirs(tmp_path: Path):
    root = make_tree(tmp_path / "project")
    report = ReadReport()
    documents = read_documents([f"code:{root}"], None, report)
    assert [d.id for d in documents] == [
        "project:lib/Widget.JAVA",
        "project:lib/util.rs",
        "project:main.py",
        "project:web/app.ts",
    ]
    assert all(d.is_code and d.source == "project" for d in documents)
    assert documents[2].origin == str(root / "main.py") and documents[2].text == "print('hello')\n"


def test_code_tree_extension_filter(tmp_path: Path):
    root = make_tree(tmp_path / "project")
    documents = read_documents([f"code:{root}/:.py,rs"], None)
    assert [d.id for d in documents] == ["project:lib/util.rs", "project:main.py"]


def test_code_tree_ids_do_not_depend_on_where_the_tree_lies(tmp_path: Path):
    first = make_tree(tmp_path / "a" / "project")
    second = make_tree(tmp_path / "b" / "project")
    ids = [[d.id for d in read_documents([f"code:{root}"], None)] for root in (first, second)]
    assert ids[0] == ids[1]


def test_code_spec_parsing(tmp_path: Path):
    assert parse_code_spec("code:src/:.py,.RS") == (Path("src"), (".py", ".rs"))
    assert parse_code_spec("code:src") == (Path("src"), DEFAULT_CODE_EXTENSIONS)
    colon_dir = tmp_path / "odd:name"
    colon_dir.mkdir()
    assert parse_code_spec(f"code:{colon_dir}") == (colon_dir, DEFAULT_CODE_EXTENSIONS)
    with pytest.raises(ValueError, match="names no directory"):
        parse_code_spec("code::.py")


def test_code_tree_errors_name_the_directory(tmp_path: Path):
    with pytest.raises(NotADirectoryError, match="nowhere"):
        read_documents([f"code:{tmp_path / 'nowhere'}"], None)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("prose\n")
    with pytest.raises(FileNotFoundError, match=r"docs' has no file with extension \.py"):
        read_documents([f"code:{tmp_path / 'docs'}:.py"], None)


# --- Hugging Face datasets -----------------------------------------------------------------------------

ROWS = {
    "text": texts(5),
    "uid": [f"u{i}" for i in range(5)],
    "meta": [{"body": f"Nested body {i}.", "score": i} for i in range(5)],
}


def test_save_to_disk_dataset_round_trip(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    path = tmp_path / "saved"
    datasets.Dataset.from_dict(ROWS).save_to_disk(str(path))
    report = ReadReport()
    documents = read_documents([str(path)], None, report)
    assert [d.text for d in documents] == ROWS["text"]
    assert [d.id for d in documents] == [f"saved:row{i}" for i in range(5)]
    assert documents[3].origin == f"{path}:row3"
    with_ids = read_documents([f"hf:{path}"], None, text_field="meta.body", id_field="uid")
    assert [d.text for d in with_ids] == [f"Nested body {i}." for i in range(5)]
    assert [d.id for d in with_ids] == [f"saved:u{i}" for i in range(5)]
    with pytest.raises(ValueError, match=r"saved has no column 'body' .*columns are: text, uid, meta"):
        read_documents([str(path)], None, text_field="body")
    with pytest.raises(ValueError, match="single Dataset, not a DatasetDict"):
        read_documents([f"hf:{path}:validation"], None)


def test_save_to_disk_dataset_dict_takes_the_named_split(tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    path = tmp_path / "dict"
    validation = {"text": ["held out text"], "uid": ["v0"], "meta": [{"body": "b", "score": 0}]}
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(ROWS), "validation": datasets.Dataset.from_dict(validation)}
    ).save_to_disk(str(path))
    train = read_documents([str(path)], None)
    assert [d.text for d in train] == ROWS["text"]
    assert train[0].id == "dict:train:row0" and train[0].origin == f"{path / 'train'}:row0"
    held_out = read_documents([f"hf:{path}:validation"], None, id_field="uid")
    assert [(d.id, d.text) for d in held_out] == [("dict:v0", "held out text")]
    with pytest.raises(ValueError, match=r"has no split 'test'; its splits are: train, validation"):
        read_documents([f"hf:{path}:test"], None)


def test_record_documents_handles_any_iterable_of_rows():
    rows = [{"text": "first"}, {"text": None}, {"other": "x"}, {"text": "last", "id": 7}]
    report = ReadReport()
    documents = list(record_documents(rows, "hf:demo:train", "demo:train", "demo", report, id_field="id"))
    assert [(d.id, d.origin) for d in documents] == [
        ("demo:train:row0", "hf:demo:train:row0"),
        ("demo:7", "hf:demo:train:row3"),
    ]
    assert report.malformed_records == 2 and report.malformed_locations[1].startswith("hf:demo:train:row2:")


def test_record_documents_reads_an_in_memory_dataset():
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_dict(ROWS)
    documents = list(
        record_documents(dataset, "mem", "mem", "mem", ReadReport(), text_field="meta.body", id_field="uid")
    )
    assert [d.text for d in documents] == [f"Nested body {i}." for i in range(5)]


def test_hf_spec_parsing(tmp_path: Path):
    assert parse_hf_spec("hf:user/corpus") == ("user/corpus", None, None)
    assert parse_hf_spec("hf:user/corpus:validation") == ("user/corpus", None, "validation")
    with pytest.raises(ValueError, match="names no dataset"):
        parse_hf_spec("hf::train")


def test_missing_datasets_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    name, stream = documents_for("hf:user/corpus", ReadReport())[0]
    assert name == "user/corpus"
    with pytest.raises(ImportError, match=r"pip install 'lit_pretrain\[hf\]'"):
        next(stream)


def test_hub_dataset_offline_fails_fast_with_a_clear_error(tmp_path: Path):
    pytest.importorskip("datasets")
    # A fresh interpreter, because the datasets library reads the offline switches once, at import.
    script = textwrap.dedent(
        """
        from lit_pretrain.data.prepare import read_documents
        try:
            read_documents(["hf:some/nonexistent"], None)
        except ConnectionError as err:
            print("ERROR:", err)
        """
    )
    env = dict(
        os.environ,
        HF_DATASETS_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf-home"),
        PYTHONPATH=str(REPO_ROOT),
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert time.monotonic() - started < 30
    assert "ERROR: cannot open Hugging Face dataset 'some/nonexistent' split 'train'" in result.stdout, (
        result.stderr
    )
    assert "HF_DATASETS_OFFLINE and HF_HUB_OFFLINE set" in result.stdout
    assert "save_to_disk" in result.stdout
