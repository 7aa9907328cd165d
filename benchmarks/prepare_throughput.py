"""Throughput of `lit-pretrain prepare` against the bare tokenizer, and of the training DataLoader.

    python benchmarks/prepare_throughput.py --output prepare_throughput.json

The corpus is the built-in python-stdlib written once as user inputs (the code as a `code:` source tree,
the docstrings as JSONL), so that reading costs what reading a user's files costs (not the AST parse
of the built-in prose source) and code gets code filters. The
tokenizer is trained once beforehand, so neither side of the ratio includes tokenizer training.
Both sides use the same number of tokenizer threads (RAYON_NUM_THREADS, default: all cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from tokenizers import Tokenizer

from lit_pretrain.data.datamodule import PretrainDataModule
from lit_pretrain.data.prepare import prepare as run_prepare
from lit_pretrain.data.prepare import read_documents


def write_corpus(directory: Path, max_documents: int | None) -> tuple[list[str], int]:
    """The built-in corpus as user inputs: code as a source tree, prose as JSONL; returns (inputs, bytes)."""
    code_dir, prose_file = directory / "stdlib-code", directory / "stdlib-prose.jsonl"
    text_bytes = 0
    with open(prose_file, "w", encoding="utf-8") as prose:
        for document in read_documents(["python-stdlib"], max_documents):
            text_bytes += len(document.text.encode("utf-8"))
            if document.is_code:
                path = code_dir / document.id.removeprefix("stdlib:")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(document.text, encoding="utf-8")
            else:
                prose.write(json.dumps({"id": document.id, "text": document.text}, ensure_ascii=False) + "\n")
    return [f"code:{code_dir}", str(prose_file)], text_bytes


def corpus_texts(inputs: list[str]) -> list[str]:
    """The same texts prepare reads, for the bare tokenizer."""
    return [d.text for d in read_documents(inputs, None, id_field="id")]


def timed_prepare(inputs: list[str], output: Path, tokenizer: Path, **options) -> float:
    shutil.rmtree(output, ignore_errors=True)
    start = time.perf_counter()
    run_prepare(inputs, output, tokenizer=tokenizer, id_field="id", **options)
    return time.perf_counter() - start


def bare_tokenizer_seconds(texts: list[str], tokenizer: Path) -> float:
    """`encode_batch` alone over the same texts, in the same batch size as prepare."""
    bpe = Tokenizer.from_file(str(tokenizer))
    encode = getattr(bpe, "encode_batch_fast", bpe.encode_batch)
    start = time.perf_counter()
    for index in range(0, len(texts), 512):
        encode(texts[index : index + 512], add_special_tokens=False)
    return time.perf_counter() - start


def loader_tokens_per_second(
    data_dir: Path, workers: int, seq_len: int, batch_size: int, batches: int
) -> float:
    """Tokens/s delivered by PretrainDataModule's training DataLoader (after one warm-up batch)."""
    datamodule = PretrainDataModule(
        data_dir=str(data_dir), seq_len=seq_len, micro_batch_size=batch_size, num_workers=workers
    )
    datamodule.setup("fit")
    tokens, epoch = 0, 0
    loader = datamodule.train_dataloader()
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(iterator)
        except StopIteration:
            epoch += 1
            loader.dataset.set_epoch(epoch)
            iterator = iter(loader)
            batch = next(iterator)
        tokens += batch["tokens"].numel()
    return tokens / (time.perf_counter() - start)


def main() -> None:
    """Run every measurement, print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="prepare_throughput.json")
    parser.add_argument("--max_documents", type=int, default=None, help="per source, for a quick run")
    parser.add_argument(
        "--repeats", type=int, default=5, help="rounds; MB/s are the best round, ratio the median"
    )
    parser.add_argument("--seq_len", type=int, default=2048, help="DataLoader measurement: tokens per window")
    parser.add_argument(
        "--batch_size", type=int, default=32, help="DataLoader measurement: windows per batch"
    )
    parser.add_argument(
        "--loader_batches", type=int, default=60, help="DataLoader measurement: batches timed"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="prepare-bench-"))
    inputs, text_bytes = write_corpus(work, args.max_documents)
    megabytes = text_bytes / 1e6
    # Tokenizer trained once, outside all timings.
    run_prepare(inputs, work / "warmup", vocab_size=8192, id_field="id")
    tokenizer = work / "warmup" / "tokenizer.json"
    texts = corpus_texts(inputs)

    # Rounds interleave the three timings, so a slow spell of this shared machine hits all of them
    # alike instead of one; each keeps its best round.
    timings: dict[str, list[float]] = {"tokenizer": [], "pipeline": [], "near": []}
    for _ in range(args.repeats):
        timings["tokenizer"].append(bare_tokenizer_seconds(texts, tokenizer))
        timings["pipeline"].append(timed_prepare(inputs, work / "exact", tokenizer))
        timings["near"].append(
            timed_prepare(inputs, work / "near", tokenizer, dedup={"exact": True, "near": True})
        )
    tokenizer_s, pipeline_s, near_s = (min(timings[k]) for k in ("tokenizer", "pipeline", "near"))
    ratios = [t / p for t, p in zip(timings["tokenizer"], timings["pipeline"], strict=True)]
    loader = {
        w: loader_tokens_per_second(work / "exact", w, args.seq_len, args.batch_size, args.loader_batches)
        for w in (1, 2)
    }
    results = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "corpus_mb": round(megabytes, 2),
        "tokenizer_threads": os.environ.get("RAYON_NUM_THREADS", str(os.cpu_count())),
        "tokenizer_mb_s": megabytes / tokenizer_s,
        "pipeline_mb_s": megabytes / pipeline_s,
        # The median of paired rounds: each round's pipeline is compared with the tokenizer timed just
        # before it, so a slow spell of the machine cancels out (best against best mixes rounds).
        "ratio": statistics.median(ratios),
        "near_dedup_mb_s": megabytes / near_s,
        "loader_tokens_per_s_1_worker": loader[1],
        "loader_tokens_per_s_2_workers": loader[2],
        # Per round, to show how much this machine's noise moves the ratio.
        "ratio_per_round": ratios,
    }
    print(
        f"\ncorpus: {megabytes:.1f} MB of text (python-stdlib as a code tree + JSONL prose), {results['machine']}"
    )
    print(f"{'measurement':<42}{'value':>14}")
    for key, unit in (
        ("tokenizer_mb_s", "MB/s"),
        ("pipeline_mb_s", "MB/s"),
        ("ratio", "x"),
        ("near_dedup_mb_s", "MB/s"),
        ("loader_tokens_per_s_1_worker", "tokens/s"),
        ("loader_tokens_per_s_2_workers", "tokens/s"),
    ):
        print(f"{key:<42}{results[key]:>14,.2f} {unit}")
    print("ratio in each round: " + ", ".join(f"{r:.2f}" for r in results["ratio_per_round"]))
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
