"""How the one-task phases of `prepare --tasks` (decide, merge) grow with the corpus, against the parallel ones.

    python benchmarks/task_serial_phases.py --output task_serial_phases.json

A job's parallel phases (screen, dedup, tokenize, write) scale with tasks; its decide and merge tasks run
once, so what they cost per document (decide) and per chunk (merge) bounds how far a job scales. This
writes synthetic corpora of N and 4N short documents (30 words each, some repeated, so duplicates are
flagged), runs every task of a `--tasks K` job one after another in this process (one core, one
tokenizer thread), and reports seconds per phase and the slope of the one-task phases: the difference
between the two sizes divided by the extra documents or chunks, so fixed costs (loading the tokenizer,
the plan) cancel out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lit_pretrain.data import tasks as phases  # noqa: E402
from lit_pretrain.data.prepare import PrepareOptions  # noqa: E402
from lit_pretrain.data.prepare import prepare as run_prepare  # noqa: E402

PARALLEL = (phases.SCREEN, phases.DEDUP, phases.TOKENIZE, phases.WRITE)
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Made-up words of 4-8 letters and common English ones, so that the default quality filters (stop words,
# mean word length) keep the documents.
WORDS = ["".join(random.Random(i).choices(_LETTERS, k=4 + i % 5)) for i in range(2000)]
STOP_WORDS = ["the", "and", "of", "to", "that", "with", "have", "this"]


def write_corpus(directory: Path, documents: int, files: int) -> None:
    """`documents` JSONL documents of 30 random words over `files` files; one in ten repeats an earlier one."""
    rng = random.Random(0)
    directory.mkdir(parents=True)
    texts: list[str] = []
    for _ in range(documents):
        if texts and rng.random() < 0.1:
            texts.append(rng.choice(texts))
        else:
            words = [rng.choice(STOP_WORDS) if rng.random() < 0.3 else rng.choice(WORDS) for _ in range(30)]
            texts.append(" ".join(words) + ".")
    per_file = -(-documents // files)
    for index in range(files):
        with open(directory / f"part-{index:03d}.jsonl", "w") as file:
            for text in texts[index * per_file : (index + 1) * per_file]:
                file.write(json.dumps({"text": text}) + "\n")


def phase_seconds(inputs: list[str], tokenizer: Path, work: Path, tasks: int, **options: object) -> dict:
    """Every task of every phase of a `--tasks` job, one after another in this process; seconds per phase
    (a list per task), the documents read and kept, and the chunks. `options`: PrepareOptions fields."""
    options = PrepareOptions(tokenizer=str(tokenizer), **options)
    shutil.rmtree(work, ignore_errors=True)
    phases.save_plan(phases.make_plan(inputs, [], options, tasks), work)
    output = work.with_name(work.name + "-out")
    shutil.rmtree(output, ignore_errors=True)
    runs = {
        phases.SCREEN: lambda t: phases.screen_task(work, t),
        phases.DEDUP: lambda t: phases.dedup_task(work, t),
        phases.DECIDE: lambda t: phases.decide_task(work),
        phases.TOKENIZE: lambda t: phases.tokenize_task(work, t),
        phases.WRITE: lambda t: phases.write_task(work, t),
        phases.MERGE: lambda t: phases.merge_task(work, output),
    }
    seconds: dict[str, list[float]] = {}
    for phase, run in runs.items():
        for task in range(tasks if phase in PARALLEL else 1):
            start = time.perf_counter()
            run(task)
            seconds.setdefault(phase, []).append(time.perf_counter() - start)
    manifest = json.loads((output / "manifest.json").read_text())
    return {
        "seconds": seconds,
        "documents": manifest["documents_in"],
        "kept": manifest["documents_kept"],
        "chunks": len(list(output.glob("*/*/chunk-*.bin"))),
    }


def main() -> None:
    """Measure both sizes, print a table and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="task_serial_phases.json")
    parser.add_argument("--documents", type=int, default=50_000, help="the smaller corpus; the larger is 4x")
    parser.add_argument("--tasks", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serial-phases-"))
    sizes = {}
    for documents in (args.documents, 4 * args.documents):
        corpus = work / f"corpus-{documents}"
        write_corpus(corpus, documents, files=4 * args.tasks)
        tokenizer = work / "tokenizer"
        if not tokenizer.exists():  # trained once, on the smaller corpus, outside the timings
            run_prepare([str(corpus)], tokenizer, vocab_size=1024)
        # Chunks of 2**12 tokens: many chunks, so the merge's cost per chunk shows.
        sizes[documents] = phase_seconds(
            [str(corpus)], tokenizer / "tokenizer.json", work / "job", args.tasks, chunk_tokens=2**12
        )
    small, large = (sizes[n] for n in sorted(sizes))
    extra_documents = large["documents"] - small["documents"]
    extra_chunks = max(large["chunks"] - small["chunks"], 1)
    results = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "tasks": args.tasks,
        "sizes": {str(n): sizes[n] for n in sorted(sizes)},
        "decide_us_per_document": 1e6
        * (large["seconds"]["decide"][0] - small["seconds"]["decide"][0])
        / extra_documents,
        "merge_ms_per_chunk": 1e3
        * (large["seconds"]["merge"][0] - small["seconds"]["merge"][0])
        / extra_chunks,
        "screen_us_per_document": 1e6
        * (sum(large["seconds"]["screen"]) - sum(small["seconds"]["screen"]))
        / extra_documents,
    }
    print(f"\n--tasks {args.tasks}, every task one after another on one core ({results['machine']})")
    print(f"{'documents':>10} {'chunks':>7} " + " ".join(f"{phase:>9}" for phase in small["seconds"]))
    for n in sorted(sizes):
        size = sizes[n]
        totals = " ".join(f"{sum(size['seconds'][phase]):>8.2f}s" for phase in size["seconds"])
        print(f"{size['documents']:>10,} {size['chunks']:>7} {totals}")
    print(f"{'decide, per extra document':<40}{results['decide_us_per_document']:>10.3f} us")
    print(f"{'merge, per extra chunk':<40}{results['merge_ms_per_chunk']:>10.3f} ms")
    print(f"{'screen (all tasks), per extra document':<40}{results['screen_us_per_document']:>10.3f} us")
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
