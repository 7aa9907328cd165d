"""litdata shards written in runs of chunks by separate writers are the shards one writer writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lit_pretrain.data.shards import (
    PIECE_TOKENS,
    TokenStream,
    chunk_starts,
    write_chunk_range,
    write_index,
    write_shards,
)
from lit_pretrain.data.split_writers import SplitWriters

DTYPE = np.dtype(np.uint16)


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def token_files(tmp_path_factory) -> tuple[Path, list[tuple[Path, int, int]]]:
    """One token file of 100,000 tokens, and the same tokens as three files of uneven lengths."""
    root = tmp_path_factory.mktemp("tokens")
    tokens = np.random.default_rng(0).integers(0, 50_000, size=100_000).astype(DTYPE)
    tokens.tofile(root / "whole.bin")
    segments = []
    for index, (start, end) in enumerate([(0, 30_001), (30_001, 77_777), (77_777, 100_000)]):
        tokens[start:end].tofile(root / f"part-{index}.bin")
        segments.append((root / f"part-{index}.bin", 0, end - start))
    return root / "whole.bin", segments


# 2 pieces a chunk; 2 pieces and the short last piece joins them (8192 + 1696 <= 10000); a piece larger
# than a chunk, alone; everything in one chunk.
@pytest.mark.parametrize("chunk_tokens", [8192, 10_000, 1000, 2**21])
def test_every_cut_into_two_runs_writes_what_one_writer_writes(token_files, tmp_path: Path, chunk_tokens):
    whole, segments = token_files
    write_shards([(whole, 0, 100_000)], DTYPE, tmp_path / "one", chunk_tokens)
    expected = _files(tmp_path / "one")
    stream = TokenStream(segments, DTYPE)
    chunks = len(chunk_starts(stream.tokens, chunk_tokens)) - 1
    assert len([name for name in expected if name.startswith("chunk-")]) == chunks
    for cut in range(chunks + 1):
        out = tmp_path / f"cut-{cut}"
        out.mkdir()
        runs = []
        for run, (first, end) in enumerate([(0, cut), (cut, chunks)]):
            if first < end:
                runs.append(tmp_path / f"cut-{cut}-run-{run}")
                runs[-1].mkdir()
                write_chunk_range(stream, runs[-1], chunk_tokens, first, end)
        for run in runs:
            for chunk in run.glob("chunk-*.bin"):
                chunk.rename(out / chunk.name)
        write_index(out, runs)
        assert _files(out) == expected, f"cut before chunk {cut}"


def test_chunk_starts_follow_litdatas_packing():
    assert chunk_starts(5 * PIECE_TOKENS, 2 * PIECE_TOKENS) == [0, 2, 4, 5]
    # The short last piece joins the last chunk only if it fits.
    assert chunk_starts(4 * PIECE_TOKENS + 100, 2 * PIECE_TOKENS + 100) == [0, 2, 5]
    assert chunk_starts(4 * PIECE_TOKENS + 101, 2 * PIECE_TOKENS + 100) == [0, 2, 4, 5]
    assert chunk_starts(100, 50) == [0, 1]
    assert chunk_starts(0, 8192) == [0]


def test_a_stream_reads_across_segment_boundaries(token_files):
    whole, segments = token_files
    tokens = np.fromfile(whole, dtype=DTYPE)
    stream = TokenStream([*segments[:1], (segments[1][0], 0, 0), *segments[1:]], DTYPE)
    for start, end in [(0, 10), (29_990, 30_010), (0, 100_000), (77_000, 78_000), (99_999, 100_000)]:
        assert np.array_equal(stream.read(start, end), tokens[start:end])


def test_holding_out_a_document_cuts_it_out_of_the_files_it_spans(token_files, tmp_path: Path):
    _, segments = token_files
    writers = SplitWriters(tmp_path, DTYPE, lambda document_id, source: False)
    for index, (path, _, tokens) in enumerate(segments):
        # The lowest-hash document starts 10 tokens before the end of the first file and ends in the second.
        lowest = (0.001, "web", 30_001 - 10, 25) if index == 0 else None
        writers.add_file("web", "train", path, documents=10, tokens=tokens, lowest=lowest)
    writers.close()
    writers.hold_out_lowest_train_document()
    train = TokenStream(writers.segments["web", "train"], DTYPE).read(0, 100_000 - 25)
    held_out = TokenStream(writers.segments["web", "val"], DTYPE).read(0, 25)
    tokens = TokenStream(segments, DTYPE).read(0, 100_000)
    assert np.array_equal(held_out, tokens[29_991:30_016])
    assert np.array_equal(train, np.concatenate([tokens[:29_991], tokens[30_016:]]))
    assert writers.counts() == {("web", "train"): (29, 100_000 - 25), ("web", "val"): (1, 25)}
