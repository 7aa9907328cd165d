"""Make the shipped multiple-choice tasks from the running interpreter's standard library, deterministically.

    python -m lit_pretrain.evaluation.tasks.make_tasks            # rewrite the .jsonl files and tasks.json
    python -m lit_pretrain.evaluation.tasks.make_tasks --check    # exit 1 if they would change

The files in this directory were made with the CPython named in tasks.json; another Python version has
another standard library, so regenerating there gives other records (the shipped files need no
regeneration to be used). Three tasks, each record `{"context", "choices", "label", "id"}` (`id`: the
stdlib function or docstring the record was made from):

- `stdlib_code_next_lines`: the start of a function, and which 3 lines follow it: the real ones or 3
  consecutive lines of other functions that start at the same indentation. Functions come from the files
  that `lit-pretrain prepare` holds out for validation with the built-in corpus's val_fraction 0.01 (the
  split hashes the document id), so a model trained on `make data` has not trained on them.
- `stdlib_docstring_for_function`: a function's `def` line and opening quotes, and which summary line is
  its docstring's; functions from the same held-out files.
- `stdlib_docstring_next_sentence` (prose): one or two sentences of a docstring paragraph, and which
  sentence comes next. From all docstrings: these are training text of the built-in corpus.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import random
import re
import sys
import sysconfig
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lit_pretrain.data.prepare import in_validation
from lit_pretrain.data.sources import ReadReport, python_stdlib_prose, stdlib_python_files

TASKS_DIR = Path(__file__).parent
INDEX = TASKS_DIR / "tasks.json"
RECORDS = 150
CHOICES = 4
SEED = 20261201
VAL_FRACTION = 0.01  # configs/prepare/python-stdlib.yaml
CONTINUATION_LINES = 3
MAX_LINE = 100
# A sentence ends with . ! or ? after a lower-case letter, digit or bracket, and the next starts upper-case.
SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]][.!?])\s+(?=[A-Z])")


@dataclass(frozen=True)
class Function:
    """A function's source lines (dedented, no blank or comment-only lines, no docstring) and its docstring."""

    id: str
    header: int  # how many of `lines` are the def line(s)
    lines: tuple[str, ...]
    docstring: str | None


def held_out_files() -> list[tuple[str, Path]]:
    """(relative path, path) of the stdlib files `prepare` holds out with the built-in corpus's val_fraction."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [(path.relative_to(root).as_posix(), path) for path in stdlib_python_files()]
    return [(relative, path) for relative, path in files if in_validation(f"stdlib:{relative}", VAL_FRACTION)]


def functions(relative: str, path: Path) -> Iterator[Function]:
    """The functions and methods of one file, in source order."""
    source = path.read_text(encoding="utf-8", errors="replace")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    file_lines = source.splitlines()
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    for node in sorted(nodes, key=lambda n: n.lineno):
        body = node.body
        docstring = ast.get_docstring(node)
        skip: set[int] = set()
        if docstring is not None:
            skip = set(range(body[0].lineno, body[0].end_lineno + 1))
            body = body[1:]
        if not body:
            continue
        header_end = node.body[0].lineno - 1  # the def line(s), before the docstring or first statement
        numbered = [
            (number, file_lines[number - 1])
            for number in range(node.lineno, node.end_lineno + 1)
            if number not in skip
        ]
        kept = [(n, line) for n, line in numbered if line.strip() and not line.strip().startswith("#")]
        if any(len(line) > MAX_LINE for _, line in kept):
            continue
        dedented = textwrap.dedent("\n".join(line for _, line in kept)).split("\n")
        header = sum(1 for n, _ in kept if n <= header_end)
        if header == 0 or not dedented[0].startswith(("def ", "async def ")):
            continue  # a one-line function, or a string literal at column 0 that defeats the dedent
        yield Function(f"stdlib:{relative}:{node.name}@{node.lineno}", header, tuple(dedented), docstring)


def indentation(line: str) -> int:
    """Leading spaces of a line."""
    return len(line) - len(line.lstrip(" "))


def choose(rng: random.Random, real: str, pool: list[str], count: int) -> tuple[list[str], int]:
    """The real choice and `count` distinct others from `pool`, shuffled; and the real one's index."""
    others: list[str] = []
    for candidate in rng.sample(pool, len(pool)):
        if candidate != real and candidate not in others:
            others.append(candidate)
        if len(others) == count:
            break
    if len(others) < count:
        raise ValueError(f"not enough distinct distractors for {real!r}")
    choices = [real, *others]
    rng.shuffle(choices)
    return choices, choices.index(real)


def code_next_lines(pool: list[Function], rng: random.Random) -> list[dict]:
    """Which 3 lines continue the function: its own, or 3 lines of another function at the same indentation."""
    eligible = [f for f in pool if len(f.lines) - f.header >= CONTINUATION_LINES + 2]
    snippets: dict[int, list[tuple[str, str]]] = {}  # by indentation: (function id, snippet)
    for function in eligible:
        for start in range(function.header, len(function.lines) - CONTINUATION_LINES + 1):
            snippet = "\n".join(function.lines[start : start + CONTINUATION_LINES]) + "\n"
            snippets.setdefault(indentation(function.lines[start]), []).append((function.id, snippet))
    records = []
    for function in rng.sample(eligible, len(eligible)):
        # At least two body lines of context, and a full continuation after them.
        cut = rng.randint(function.header + 2, len(function.lines) - CONTINUATION_LINES)
        real = "\n".join(function.lines[cut : cut + CONTINUATION_LINES]) + "\n"
        others = [
            s for owner, s in snippets.get(indentation(function.lines[cut]), []) if owner != function.id
        ]
        if len(set(others) - {real}) < CHOICES - 1:
            continue
        choices, label = choose(rng, real, others, CHOICES - 1)
        context = "\n".join(function.lines[:cut]) + "\n"
        records.append({"context": context, "choices": choices, "label": label, "id": function.id})
        if len(records) == RECORDS:
            break
    return records


def summary_line(docstring: str) -> str | None:
    """The first line of a docstring when it is a plain sentence of reasonable length."""
    first = docstring.strip().split("\n", 1)[0].strip()
    return first if 15 <= len(first) <= 90 and '"""' not in first and first[0].isalpha() else None


def docstring_for_function(pool: list[Function], rng: random.Random) -> list[dict]:
    """Which summary line opens the function's docstring: its own or another function's."""
    eligible = [f for f in pool if f.docstring and summary_line(f.docstring)]
    summaries = [summary_line(f.docstring) for f in eligible]
    records = []
    for function in rng.sample(eligible, len(eligible)):
        real = summary_line(function.docstring)
        choices, label = choose(rng, real, summaries, CHOICES - 1)
        context = "\n".join(function.lines[: function.header]) + '\n    """'
        records.append({"context": context, "choices": choices, "label": label, "id": function.id})
        if len(records) == RECORDS:
            break
    return records


def docstring_next_sentence(rng: random.Random) -> list[dict]:
    """Which sentence follows one or two sentences of a docstring paragraph (choices with a leading space)."""
    candidates = []
    for document in python_stdlib_prose(ReadReport()):
        if not document.id.startswith("stdlib-doc:"):
            continue  # pydoc topics are reference tables as much as prose
        for paragraph in re.split(r"\n\s*\n", document.text):
            if paragraph.lstrip().startswith((">>>", "-", "*", ":", "..")):
                continue
            sentences = SENTENCE_END.split(" ".join(paragraph.split()))
            for index in range(1, len(sentences)):
                following = sentences[index]
                if 25 <= len(following) <= 160 and 25 <= len(sentences[index - 1]) <= 240:
                    context = " ".join(sentences[max(0, index - 2) : index])
                    candidates.append((document.id, context, following))
                    break  # one record per paragraph
    sentences = sorted({following for _, _, following in candidates})
    by_length: dict[int, list[str]] = {}
    for sentence in sentences:
        by_length.setdefault(len(sentence) // 20, []).append(sentence)
    records = []
    used: set[str] = set()
    for document_id, context, following in rng.sample(candidates, len(candidates)):
        if document_id in used:
            continue
        # Distractors of about the same length, so length alone does not give the answer away.
        bucket = len(following) // 20
        pool = [s for b in (bucket - 1, bucket, bucket + 1) for s in by_length.get(b, [])]
        choices, label = choose(rng, following, pool, CHOICES - 1)
        records.append(
            {"context": context, "choices": [" " + c for c in choices], "label": label, "id": document_id}
        )
        used.add(document_id)
        if len(records) == RECORDS:
            break
    return records


DESCRIPTIONS = {
    "stdlib_code_next_lines": "the next 3 lines of a stdlib function (held-out files) vs lines of others",
    "stdlib_docstring_for_function": "a function's docstring summary line (held-out files) vs others'",
    "stdlib_docstring_next_sentence": "the next sentence of a stdlib docstring vs sentences of others",
}


def make_tasks() -> dict[str, list[dict]]:
    """Every task's records, from the running interpreter's standard library."""
    pool = [f for relative, path in held_out_files() for f in functions(relative, path)]
    return {
        "stdlib_code_next_lines": code_next_lines(pool, random.Random(SEED)),
        "stdlib_docstring_for_function": docstring_for_function(pool, random.Random(SEED + 1)),
        "stdlib_docstring_next_sentence": docstring_next_sentence(random.Random(SEED + 2)),
    }


def render(tasks: dict[str, list[dict]]) -> dict[str, str]:
    """File name -> content: one JSONL file per task, and tasks.json (Python version, counts, hashes)."""
    files = {
        f"{name}.jsonl": "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        for name, records in tasks.items()
    }
    index = {
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "tasks": {
            name: {
                "description": DESCRIPTIONS[name],
                "records": len(records),
                "sha256": hashlib.sha256(files[f"{name}.jsonl"].encode()).hexdigest(),
            }
            for name, records in tasks.items()
        },
    }
    files[INDEX.name] = json.dumps(index, indent=2) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    """Write the task files, or with --check report whether they are up to date."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a change")
    parser.add_argument("--output_dir", default=str(TASKS_DIR))
    args = parser.parse_args(argv)
    files = render(make_tasks())
    output_dir = Path(args.output_dir)
    changed = [name for name, text in files.items() if not (output_dir / name).is_file()
               or (output_dir / name).read_text(encoding="utf-8") != text]  # fmt: skip
    if args.check:
        print("up to date" if not changed else f"would change: {', '.join(changed)}")
        return 1 if changed else 0
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (output_dir / name).write_text(text, encoding="utf-8")
    print(f"wrote {', '.join(files)} to {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
