"""Throughput of `lit-pretrain prepare` against the bare tokenizer, and of the training DataLoader.

    python benchmarks/prepare_throughput.py --output prepare_throughput.json

The corpus is the built-in python-stdlib written once as user inputs (the code as a `code:` source tree,
the docstrings as JSONL), so that reading costs what reading a user's files costs (not the AST parse
of the built-in prose source) and code gets code filters. The
tokenizer is trained once beforehand, so neither side of the ratio includes tokenizer training.
Both sides use the same number of tokenizer threads (RAYON_NUM_THREADS, default: all cores).

Scaling with processes: prepare of the whole corpus with `--num_proc 1`, `--num_proc 2` and as 4 tasks two
at a time (`--tasks 4 --num_proc 2`), each in a fresh process with one tokenizer thread (RAYON_NUM_THREADS=1); the prose alone (2.7 MB) takes about a
second, which would measure the workers' start-up. And the one-core rate of each stage on the prose (read,
filter, dedup keys, dedup decisions, tokenize, write), measured in a fresh one-thread process too. And
`--tasks 4` phase by phase: every task of every phase run alone, one after another, on one core, which
gives what the parallel phases cost per byte and the one-task phases (decide, merge) per document and
per chunk.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lit_pretrain.data.dedup import DedupConfig, Deduplicator  # noqa: E402
from lit_pretrain.data.encode import encode_texts, token_dtype  # noqa: E402
from lit_pretrain.data.filters import DocumentFilter  # noqa: E402
from lit_pretrain.data.manifest import TOKENIZER_NAME  # noqa: E402
from lit_pretrain.data.prepare import iter_documents, read_documents  # noqa: E402
from lit_pretrain.data.prepare import prepare as run_prepare  # noqa: E402
from lit_pretrain.data.shards import TokenFileWriter, write_shards  # noqa: E402
from lit_pretrain.data.sources import ReadReport  # noqa: E402
from lit_pretrain.data.workers import BATCH_DOCUMENTS  # noqa: E402

STAGES = ("read", "filter", "dedup_keys", "dedup_decide", "tokenize", "write")


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


def in_one_thread_process(*arguments: str) -> dict:
    """Run this script with `arguments` in a fresh process with one tokenizer thread; its JSON line."""
    env = {**os.environ, "RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    # Through -c, not as a script: prepare's spawned workers re-import a script main module, and this one
    # pulls in torch (through litdata's writer), seconds of start-up per worker that `lit-pretrain
    # prepare`, whose main module is light, does not pay.
    here = Path(__file__).resolve()
    code = f"import sys; sys.path.insert(0, {str(here.parent)!r}); import {here.stem}; {here.stem}.main()"
    command = [sys.executable, "-c", code, *arguments]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def child_prepare_seconds(
    inputs: list[str],
    output: Path,
    tokenizer: Path,
    num_proc: int,
    tasks: int | None = None,
    one_core: bool = False,
) -> None:
    """(In the child) time one prepare with `num_proc` processes (as `tasks` tasks if given; on one core
    only if `one_core`); print {"seconds": ...}."""
    if one_core:
        # Every thread of this process (reader, encoder, tokenizer) on one core: the baseline of how
        # prepare scales with cores, which one process alone already spreads over 1.1-1.2 of them.
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    shutil.rmtree(output, ignore_errors=True)
    start = time.perf_counter()
    run_prepare(inputs, output, tokenizer=tokenizer, id_field="id", num_proc=num_proc, tasks=tasks)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def child_stage_seconds(inputs: list[str], tokenizer_dir: Path, work: Path) -> None:
    """(In the child) seconds of each prepare stage alone, on one core; print them as JSON."""
    # One-time costs out of the timings: litdata's writer is imported on the first shard written, and the
    # first read of a file goes to the disk.
    import litdata.streaming.writer  # noqa: F401

    for _ in iter_documents(inputs, ReadReport(), None, "text", "id"):
        pass
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    documents = [d for _, _, d in iter_documents(inputs, ReadReport(), None, "text", "id") if d is not None]
    seconds["read"] = time.perf_counter() - start
    document_filter = DocumentFilter()
    start = time.perf_counter()
    texts = [t for d in documents if (t := document_filter(d.text, d.is_code)) is not None]
    seconds["filter"] = time.perf_counter() - start
    deduplicator = Deduplicator(DedupConfig(exact=True, near=True))
    # In prepare's batches: the decisions are taken a batch at a time.
    batches = [texts[i : i + BATCH_DOCUMENTS] for i in range(0, len(texts), BATCH_DOCUMENTS)]
    start = time.perf_counter()
    keys = [deduplicator.keys(batch) for batch in batches]
    seconds["dedup_keys"] = time.perf_counter() - start
    start = time.perf_counter()
    verdicts = [verdict for batch_keys in keys for verdict in deduplicator.decide(batch_keys)]
    seconds["dedup_decide"] = time.perf_counter() - start
    kept = [t for t, verdict in zip(texts, verdicts, strict=True) if verdict is None]
    bpe = Tokenizer.from_file(str(tokenizer_dir / TOKENIZER_NAME))
    dtype = token_dtype(bpe.get_vocab_size())
    start = time.perf_counter()
    arrays = [
        a for i in range(0, len(kept), 512) for a in encode_texts(bpe, kept[i : i + 512], 0, None, dtype)
    ]
    seconds["tokenize"] = time.perf_counter() - start
    start = time.perf_counter()
    writer = TokenFileWriter(work / "stage-write.bin", dtype)
    for array in arrays:
        writer.write(array)
    writer.close()
    write_shards([(writer.path, 0, writer.tokens)], dtype, work / "stage-shards", 2**21)
    seconds["write"] = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "documents": len(documents), "kept": len(kept)}))


def loader_tokens_per_second(
    data_dir: Path, workers: int, seq_len: int, batch_size: int, batches: int
) -> float:
    """Tokens/s delivered by PretrainDataModule's training DataLoader (after one warm-up batch)."""
    # Imported here: prepare's spawned workers re-import this script as their main module, and the
    # datamodule pulls in torch and lightning, seconds of start-up per worker.
    from lit_pretrain.data.datamodule import PretrainDataModule

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


def child_phase_seconds(inputs: list[str], tokenizer: Path, work: Path, tasks: int) -> None:
    """(In the child) every task of every `--tasks` phase, one after another in this process and one
    thread: seconds per task, the documents and chunks; print them as JSON."""
    from task_serial_phases import phase_seconds

    measured = phase_seconds(inputs, tokenizer, work, tasks, id_field="id", chunk_tokens=2**16)
    print(json.dumps(measured))


def process_scaling(inputs: list[str], work: Path, tokenizer: Path, repeats: int) -> dict:
    """Prepare with 1 and 2 processes (paired rounds) and each stage's one-core rate on the prose."""
    corpus_mb = sum(len(t.encode("utf-8")) for t in corpus_texts(inputs)) / 1e6
    prose_inputs = inputs[1:]
    prose_mb = sum(len(t.encode("utf-8")) for t in corpus_texts(prose_inputs)) / 1e6
    # (label, processes, tasks, one core): "1core" is one process held to one core, the baseline of
    # scaling with cores; "tasks" is the task pipeline (datatrove's local executor), 4 tasks two at a
    # time, whose only one-process stages are the duplicate decisions and the merge.
    one_core = hasattr(os, "sched_setaffinity")
    modes = ((1, 1, None, False), ("1core", 1, None, True), (2, 2, None, False), ("tasks", 2, 4, False))
    modes = tuple(mode for mode in modes if one_core or not mode[3])
    rounds: dict = {label: [] for label, *_ in modes}
    for _ in range(repeats):
        for label, num_proc, tasks, pinned in modes:
            child = {
                "inputs": inputs,
                "output": str(work / f"proc{label}"),
                "tokenizer": str(tokenizer),
                "num_proc": num_proc,
                "tasks": tasks,
                "one_core": pinned,
            }
            rounds[label].append(
                in_one_thread_process("--child", "prepare", "--child_args", json.dumps(child))["seconds"]
            )
    child = {"inputs": prose_inputs, "tokenizer_dir": str(tokenizer.parent), "work": str(work)}
    stages = in_one_thread_process("--child", "stages", "--child_args", json.dumps(child))
    child = {"inputs": inputs, "tokenizer": str(tokenizer), "work": str(work / "phases"), "tasks": 4}
    phases = in_one_thread_process("--child", "phases", "--child_args", json.dumps(child))
    if one_core:
        pinned = {
            "mb_s_1_core": corpus_mb / min(rounds["1core"]),
            # 1 core -> 2 cores: how the pipeline scales with the cores it is given.
            "core_speedup": statistics.median(a / b for a, b in zip(rounds["1core"], rounds[2], strict=True)),
        }
    else:
        pinned = {}
    return {
        **pinned,
        "prose_mb": prose_mb,
        "mb_s_1_proc": corpus_mb / min(rounds[1]),
        "mb_s_2_proc": corpus_mb / min(rounds[2]),
        "process_speedup": statistics.median(a / b for a, b in zip(rounds[1], rounds[2], strict=True)),
        "mb_s_tasks": corpus_mb / min(rounds["tasks"]),
        "tasks_speedup": statistics.median(a / b for a, b in zip(rounds[1], rounds["tasks"], strict=True)),
        "process_seconds_per_round": rounds,
        "stage_seconds_one_core": stages["seconds"],
        # --tasks 4, every task run alone on one core: the parallel phases' seconds per task, and what
        # the one-task phases (decide, merge) cost per document and per chunk.
        "phase_seconds_one_core": phases["seconds"],
        "phase_documents": phases["documents"],
        "phase_chunks": phases["chunks"],
        "decide_us_per_document": 1e6 * phases["seconds"]["decide"][0] / phases["documents"],
        "merge_ms_per_chunk": 1e3 * phases["seconds"]["merge"][0] / max(phases["chunks"], 1),
        "stage_mb_s_one_core": {k: prose_mb / max(v, 1e-9) for k, v in stages["seconds"].items()},
    }


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
    parser.add_argument("--child", choices=("prepare", "stages", "phases"), help=argparse.SUPPRESS)
    parser.add_argument("--child_args", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child = json.loads(args.child_args)
        if args.child == "prepare":
            child_prepare_seconds(
                child["inputs"],
                Path(child["output"]),
                Path(child["tokenizer"]),
                child["num_proc"],
                child.get("tasks"),
                child.get("one_core", False),
            )
        elif args.child == "phases":
            child_phase_seconds(
                child["inputs"], Path(child["tokenizer"]), Path(child["work"]), child["tasks"]
            )
        else:
            child_stage_seconds(child["inputs"], Path(child["tokenizer_dir"]), Path(child["work"]))
        return

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
        timings["pipeline"].append(timed_prepare(inputs, work / "exact", tokenizer, dedup={"near": False}))
        timings["near"].append(
            timed_prepare(inputs, work / "near", tokenizer, dedup={"exact": True, "near": True})
        )
    tokenizer_s, pipeline_s, near_s = (min(timings[k]) for k in ("tokenizer", "pipeline", "near"))
    ratios = [t / p for t, p in zip(timings["tokenizer"], timings["pipeline"], strict=True)]
    loader = {
        w: loader_tokens_per_second(work / "exact", w, args.seq_len, args.batch_size, args.loader_batches)
        for w in (1, 2)
    }
    scaling = process_scaling(inputs, work, tokenizer, args.repeats)
    results = {
        **scaling,
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
    print("\nthe whole corpus, one tokenizer thread a process:")
    for num_proc in (1, 2):
        print(f"{'  --num_proc ' + str(num_proc):<42}{results[f'mb_s_{num_proc}_proc']:>14,.2f} MB/s")
    print(f"{'  speed-up (median of rounds)':<42}{results['process_speedup']:>14,.2f} x")
    if "core_speedup" in results:
        print(f"{'  --num_proc 1 held to one core':<42}{results['mb_s_1_core']:>14,.2f} MB/s")
        print(f"{'  speed-up, 1 core -> 2 cores':<42}{results['core_speedup']:>14,.2f} x")
    print(f"{'  --tasks 4 --num_proc 2':<42}{results['mb_s_tasks']:>14,.2f} MB/s")
    print(f"{'  speed-up over --num_proc 1':<42}{results['tasks_speedup']:>14,.2f} x")
    print(f"one core, each stage alone (the prose, {results['prose_mb']:.1f} MB):")
    for stage in STAGES:
        print(f"{'  ' + stage:<42}{results['stage_mb_s_one_core'][stage]:>14,.2f} MB/s")
    print(
        f"--tasks 4, each task alone on one core ({results['phase_documents']:,} documents, "
        f"{results['phase_chunks']} chunks of 2**16 tokens), seconds per task:"
    )
    for phase, seconds in results["phase_seconds_one_core"].items():
        print(f"{'  ' + phase:<42}{' '.join(f'{s:.2f}' for s in seconds):>14}")
    print(f"{'  decide, per document':<42}{results['decide_us_per_document']:>14,.2f} us")
    print(f"{'  merge, per chunk':<42}{results['merge_ms_per_chunk']:>14,.2f} ms")
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
