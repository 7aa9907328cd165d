"""JSONL inputs (plain, .gz, .zst): dotted fields, ids, and bad records counted with file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lit_pretrain.data.prepare import prepare, read_documents
from lit_pretrain.data.sources import ReadReport
from tests.helpers.corpus import prose, write_jsonl_lines

RECORDS = [
    {
        "meta": {"id": f"doc-{i}"},
        "body": {"text": prose(seed=i)},
    }
    for i in range(12)
]


@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz", "data.jsonl.zst"])
def test_jsonl_reads_dotted_text_and_id_fields(tmp_path: Path, name: str):
    write_jsonl_lines(tmp_path / name, [json.dumps(r).encode() for r in RECORDS])
    report = ReadReport()
    documents = read_documents(
        [str(tmp_path / name)], None, report, text_field="body.text", id_field="meta.id"
    )
    assert [d.text for d in documents] == [r["body"]["text"] for r in RECORDS]
    assert documents[3].id.endswith(":doc-3") and documents[3].origin == f"{tmp_path / name}:4"
    assert report.documents_in == 12 and report.malformed_records == 0


def test_bad_records_are_counted_with_locations_and_the_rest_is_read(tmp_path: Path):
    lines = [json.dumps(r).encode() for r in RECORDS]
    lines[2] = b'{"body": {"text": "unterminated'  # line 3: invalid JSON
    lines[5] = json.dumps({"body": {"other": "no text here"}}).encode()  # line 6: missing field
    lines[7] = (
        json.dumps({"body": {"text": "caf\u00e9 " + prose(seed=99)}}, ensure_ascii=False)
        .encode()
        .replace("é".encode(), b"\xff")
    )
    path = write_jsonl_lines(tmp_path / "mixed.jsonl", lines)
    manifest = prepare(
        [str(path)], tmp_path / "out", vocab_size=300, val_fraction=0.2, text_field="body.text"
    )
    assert manifest["documents_in"] == 10
    assert manifest["malformed_records"]["count"] == 2
    first = manifest["malformed_records"]["first"]
    assert (
        first[0].startswith(f"{path}:3: invalid JSON")
        and first[1] == f"{path}:6: no string at text field 'body.text'"
    )
    assert manifest["invalid_utf8_documents"] == 1
    assert manifest["splits"]["train"]["documents"] + manifest["splits"]["val"]["documents"] == 10
    saved = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert saved["malformed_records"] == manifest["malformed_records"]


def test_empty_jsonl_file_is_a_clear_error(tmp_path: Path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(ValueError, match=r"source 'empty' .* has no documents"):
        prepare([str(tmp_path / "empty.jsonl")], tmp_path / "out", vocab_size=300)
    assert not (tmp_path / "out").exists()


def test_only_malformed_records_says_so(tmp_path: Path):
    path = write_jsonl_lines(tmp_path / "broken.jsonl", [b"not json", b"{}"])
    with pytest.raises(ValueError, match=r"2 malformed records, first: .*broken.jsonl:1: invalid JSON"):
        prepare([str(path)], tmp_path / "out", vocab_size=300)


def test_duplicate_ids_name_the_record(tmp_path: Path):
    lines = [json.dumps({"id": "same", "text": "hello there"}).encode()] * 2
    path = write_jsonl_lines(tmp_path / "dupes.jsonl", lines)
    with pytest.raises(ValueError, match=r"dupes.jsonl:2\) occurs twice"):
        read_documents([str(path)], None, id_field="id")


def test_prepare_refuses_duplicate_ids_by_the_same_rule(tmp_path: Path):
    lines = [json.dumps({"id": "same", "text": prose(seed)}).encode() for seed in (1, 2)]
    path = write_jsonl_lines(tmp_path / "dupes.jsonl", lines)
    with pytest.raises(ValueError, match=r"document id 'dupes:same' \(.*dupes.jsonl:2\) occurs twice"):
        prepare([str(path)], tmp_path / "out", vocab_size=300, id_field="id")
    assert not (tmp_path / "out").exists()


def test_prepare_cli_takes_field_options(tmp_path: Path):
    from lit_pretrain.cli import main

    path = write_jsonl_lines(tmp_path / "c.jsonl", [json.dumps(r).encode() for r in RECORDS])
    main(
        [
            "prepare",
            str(path),
            "--output_dir",
            str(tmp_path / "o"),
            "--vocab_size",
            "300",
            "--text_field",
            "body.text",
        ]
    )
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["documents_in"] == 12 and manifest["malformed_records"]["count"] == 0


@pytest.mark.parametrize(
    ("spec", "name"),
    [
        ("data/web-*.jsonl.zst", "web"),
        ("corpus/", "corpus"),
        ("texts/**/*.md", "texts"),
        ("a/b.parquet", "b"),
    ],
)
def test_source_names_drop_extensions_and_globs(spec: str, name: str):
    from lit_pretrain.data.sources import source_name

    assert source_name(spec) == name
