"""prepare as tasks on datatrove's local executor (--tasks) writes what one process writes, and survives a
task killed midway: the rerun redoes that task alone."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import fsspec
import pytest

from lit_pretrain.cli.prepare import main as prepare_main
from lit_pretrain.data import engine, tasks
from lit_pretrain.data.prepare import PrepareOptions, prepare
from lit_pretrain.data.read_plan import plan_reads, split_large_files, unit_documents
from lit_pretrain.data.sources import ReadReport, documents_for
from tests.helpers import fake_slurm
from tests.helpers.corpus import prose, write_jsonl_lines, write_jsonl_texts
from tests.helpers.outputs import assert_same_output
from tests.helpers.paths import REPO_ROOT

# Chunks of two 4096-token pieces: each source's split is several chunks, which the write tasks share out
# across the tokenize tasks' files.
OPTIONS = dict(vocab_size=400, val_fraction=0.05, dedup={"exact": True, "near": True}, chunk_tokens=8192)


@pytest.fixture(scope="module")
def task_inputs(tmp_path_factory) -> dict[str, list[str]]:
    """A directory of four JSONL files, a JSONL file and a text directory, with exact and near duplicates
    across files and tasks, filtered documents, a malformed record, invalid UTF-8, and a validation input."""
    root = tmp_path_factory.mktemp("task-inputs")
    originals = [prose(seed, words=60 + seed % 50) for seed in range(480)]
    for part in range(4):
        write_jsonl_texts(root / "web" / f"part-{part}.jsonl", originals[part * 120 : (part + 1) * 120])
    near = originals[3].replace("model", "models", 1)
    other = [originals[0], originals[400].upper(), near, "too short", "again\n" * 40]
    write_jsonl_texts(root / "b.jsonl", [*other, *(prose(s) for s in range(900, 960))])
    with open(root / "b.jsonl", "a") as file:
        file.write('{"text": "unterminated\n')
    (root / "notes").mkdir()
    for index in range(5):
        (root / "notes" / f"{index}.txt").write_text(prose(2000 + index) + "e\u0301 accents\n")
    (root / "notes" / "latin1.txt").write_bytes(prose(2100).encode() + b" caf\xe9\n")
    (root / "notes" / "skipped.yaml").write_text("a: 1\n")
    write_jsonl_texts(root / "heldout.jsonl", [prose(s) for s in range(3000, 3010)])
    return {
        "inputs": [str(root / "web"), str(root / "b.jsonl"), str(root / "notes")],
        "val_inputs": [str(root / "heldout.jsonl")],
    }


@pytest.fixture(scope="module")
def reference(task_inputs, tmp_path_factory) -> Path:
    """The same inputs prepared in one process."""
    out = tmp_path_factory.mktemp("reference") / "data"
    manifest = prepare(task_inputs["inputs"], out, val_inputs=task_inputs["val_inputs"], **OPTIONS)
    assert manifest["exact_duplicates"] == 2 and manifest["near_duplicates"] == 1
    assert manifest["malformed_records"]["count"] == 1 and manifest["invalid_utf8_documents"] == 1
    assert manifest["unread_files"] == {".yaml": 1}
    assert manifest["filtered"] and manifest["cleaned"], "the filters and the cleaning ran"
    return out


def test_three_tasks_two_at_a_time_write_the_bytes_one_process_writes(task_inputs, reference, tmp_path: Path):
    out = tmp_path / "tasks"
    prepare(task_inputs["inputs"], out, val_inputs=task_inputs["val_inputs"], tasks=3, num_proc=2, **OPTIONS)
    assert_same_output(reference, out)  # manifest.json included: counts, file:line of the malformed record
    assert len(list((out / "train").glob("*/chunk-*.bin"))) > 6, "the write tasks each wrote chunks"
    assert not (tmp_path / "tasks.tasks").exists(), "the work directory goes once the dataset is written"


def test_the_command_line_runs_tasks_with_a_given_tokenizer(task_inputs, reference, tmp_path: Path):
    tokenizer = str(reference / "tokenizer.json")
    one, many = tmp_path / "one", tmp_path / "many"
    prepare(task_inputs["inputs"], one, tokenizer=tokenizer, **OPTIONS)
    argv = [
        *task_inputs["inputs"],
        "--output_dir",
        str(many),
        "--tokenizer",
        tokenizer,
        "--vocab_size",
        "400",
    ]
    argv += [
        "--val_fraction",
        "0.05",
        "--chunk_tokens",
        "8192",
        "--tasks",
        "4",
        "--work_dir",
        str(tmp_path / "work"),
    ]
    prepare_main(argv)
    assert_same_output(one, many)


def _kill_during(phase: str, task: int, inputs: dict[str, list[str]], out: Path, work: Path | str) -> None:
    """Run the job in a child process that dies (as if SIGKILLed) just before task `task` of `phase` would
    have published its output."""
    code = f"""
import os
from pathlib import Path
from lit_pretrain.data import tasks
from lit_pretrain.data.prepare import prepare

publish = tasks._publish
def dying_publish(work, staged, relative):
    if relative == {f"{phase}/{task:05d}"!r}:
        os._exit(137)
    publish(work, staged, relative)
tasks._publish = dying_publish
# The merge dies once it has gathered the chunks of its first (source, split).
write_index = tasks.write_index
def dying_write_index(directory, ranges):
    write_index(directory, ranges)
    if {phase == tasks.MERGE!r}:
        os._exit(137)
tasks.write_index = dying_write_index
prepare({inputs["inputs"]!r}, {str(out)!r}, val_inputs={inputs["val_inputs"]!r}, tasks=3, num_proc=1,
        work_dir={str(work)!r}, **{OPTIONS!r})
"""
    # Its own session, and output to a file: the executor's manager process outlives the dying parent,
    # holds inherited pipes open, and is killed with the session afterwards.
    log = out.with_name("child.log")
    with open(log, "w") as output:
        child = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        returncode = child.wait(timeout=600)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    assert returncode == 137, log.read_text()[-3000:]


@pytest.mark.parametrize("phase", [tasks.SCREEN, tasks.DEDUP, tasks.TOKENIZE, tasks.WRITE])
def test_a_task_killed_midway_is_rerun_alone_and_nothing_is_lost_or_doubled(
    phase, task_inputs, reference, tmp_path: Path, monkeypatch
):
    out, work = tmp_path / "data", tmp_path / "work"
    _kill_during(phase, 1, task_inputs, out, work)
    assert not out.exists()
    assert (work / phase / "00001.partial").is_dir() and not (work / phase / "00001").exists()
    assert (work / "logs" / phase / "completions" / "00000").exists()
    assert not (work / "logs" / phase / "completions" / "00001").exists()

    ran: list[tuple[str, int]] = []
    for name in ("screen_task", "dedup_task", "tokenize_task", "write_task"):
        original = getattr(engine, name)
        monkeypatch.setattr(
            engine,
            name,
            lambda work_dir, task, _f=original, _n=name: (ran.append((_n, task)), _f(work_dir, task)),
        )
    prepare(
        task_inputs["inputs"], out, val_inputs=task_inputs["val_inputs"], tasks=3, work_dir=work, **OPTIONS
    )
    assert_same_output(reference, out)
    later = {
        tasks.SCREEN: [tasks.DEDUP, tasks.TOKENIZE, tasks.WRITE],
        tasks.DEDUP: [tasks.TOKENIZE, tasks.WRITE],
        tasks.TOKENIZE: [tasks.WRITE],
        tasks.WRITE: [],
    }
    rest = [(f"{other}_task", t) for other in later[phase] for t in range(3)]
    assert ran == [(f"{phase}_task", 1), (f"{phase}_task", 2), *rest]


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_a_work_directory_on_object_storage_gives_the_bytes_one_process_writes(
    scheme, task_inputs, reference, tmp_path: Path
):
    # Through fsspec, as on a bucket: no rename, tasks upload what they staged and fetch what they read.
    # memory:// lives in one process, so its tasks run one at a time in this one.
    work = f"file://{tmp_path / 'work'}" if scheme == "file" else "memory://lit-pretrain-tests/work"
    out = tmp_path / "data"
    num_proc = 2 if scheme == "file" else 1
    prepare(
        task_inputs["inputs"],
        out,
        val_inputs=task_inputs["val_inputs"],
        tasks=3,
        num_proc=num_proc,
        work_dir=work,
        **OPTIONS,
    )
    assert_same_output(reference, out)
    fs, path = fsspec.core.url_to_fs(work)
    assert not fs.exists(path), "the work directory goes once the dataset is written"


def test_a_work_directory_url_fsspec_cannot_open_is_an_error_naming_it(task_inputs, tmp_path: Path):
    with pytest.raises(ValueError, match=r"--work_dir 'nosuchproto://bucket/work': .*not a URL fsspec knows"):
        prepare(task_inputs["inputs"], tmp_path / "out", tasks=2, work_dir="nosuchproto://bucket/work")
    assert not (tmp_path / "out").exists()


def test_a_task_killed_with_its_work_directory_on_object_storage_is_rerun_alone(
    task_inputs, reference, tmp_path: Path
):
    out, work = tmp_path / "data", tmp_path / "work"
    _kill_during(tasks.WRITE, 1, task_inputs, out, f"file://{work}")
    assert (work / "write" / "00000").is_dir() and not (work / "write" / "00001").exists()
    assert not list(work.rglob("*.partial")), "nothing is staged in the work directory itself"
    prepare(
        task_inputs["inputs"],
        out,
        val_inputs=task_inputs["val_inputs"],
        tasks=3,
        work_dir=f"file://{work}",
        **OPTIONS,
    )
    assert_same_output(reference, out)


def test_a_merge_killed_midway_runs_again_with_every_chunk(task_inputs, reference, tmp_path: Path):
    out, work = tmp_path / "data", tmp_path / "work"
    _kill_during(tasks.MERGE, 0, task_inputs, out, work)
    assert (tmp_path / "data.partial").is_dir() and not out.exists()
    prepare(
        task_inputs["inputs"], out, val_inputs=task_inputs["val_inputs"], tasks=3, work_dir=work, **OPTIONS
    )
    assert_same_output(reference, out)


@pytest.mark.parametrize("dedup", [{"exact": False, "near": True}, {"exact": False, "near": False}])
def test_more_tasks_than_inputs_with_each_dedup_pass_off_write_the_bytes_one_process_writes(
    dedup, tmp_path: Path
):
    # Three files for eight tasks: most screen tasks and write shares are empty.
    texts = [prose(seed, words=80) for seed in range(30)]
    texts += [texts[3], texts[5].upper(), texts[7].replace("model", "models", 1)]
    for part in range(3):
        write_jsonl_texts(tmp_path / "in" / f"{part}.jsonl", texts[part::3])
    options = dict(OPTIONS, dedup=dedup)
    one, many = tmp_path / "one", tmp_path / "many"
    manifest = prepare([str(tmp_path / "in")], one, **options)
    prepare([str(tmp_path / "in")], many, tasks=8, **options)
    assert_same_output(one, many)
    assert manifest["exact_duplicates"] == 0
    assert (manifest["near_duplicates"] > 0) == dedup["near"]


def test_an_input_gone_between_phases_fails_its_task_naming_the_file_and_the_task(
    task_inputs, tmp_path: Path
):
    copied = tmp_path / "web"
    copied.mkdir()
    for path in sorted(Path(task_inputs["inputs"][0]).iterdir()):
        (copied / path.name).write_bytes(path.read_bytes())
    work = tmp_path / "work"
    tasks.save_plan(tasks.make_plan([str(copied)], [], PrepareOptions(), 2), work)
    (copied / "part-3.jsonl").unlink()
    tasks.screen_task(work, 0)
    with pytest.raises(RuntimeError, match=r"screen task 1 \(.*part-3\.jsonl\) failed: input file .*part-3"):
        tasks.screen_task(work, 1)


def test_a_repeated_id_fails_the_job_naming_its_first_repeat_in_input_order(tmp_path: Path):
    # Ids repeat within a task and across tasks; the error names the earliest second copy, as one
    # process would, whichever dedup task's key slice holds it.
    (tmp_path / "in").mkdir()
    for part in range(3):
        records = [{"id": f"doc-{part}-{i}", "text": prose(100 * part + i)} for i in range(20)]
        if part == 1:
            records[12]["id"] = "doc-0-3"
        if part == 2:
            records[4]["id"] = records[2]["id"]
        lines = [json.dumps(record).encode() for record in records]
        write_jsonl_lines(tmp_path / "in" / f"{part}.jsonl", lines)
    inputs = [str(tmp_path / "in")]
    with pytest.raises(ValueError, match=r"document id '.*doc-0-3' \(.*1\.jsonl:13\) occurs twice") as one:
        prepare(inputs, tmp_path / "one", id_field="id", **OPTIONS)
    with pytest.raises(RuntimeError) as many:
        prepare(inputs, tmp_path / "many", id_field="id", tasks=3, **OPTIONS)
    assert str(one.value) in str(many.value), "the task error carries the one-process message"


def test_tasks_hold_out_the_lowest_hash_document_as_one_process_does(tmp_path: Path):
    # No document hashes below val_fraction: the lowest-hash training document moves to validation, cut
    # out of whichever task's token file holds it, and the chunks around the gap are written as one
    # process writes them.
    for part in range(3):
        write_jsonl_texts(tmp_path / "in" / f"{part}.jsonl", [prose(40 * part + i) for i in range(40)])
    options = dict(OPTIONS, val_fraction=1e-9, dedup={"exact": True, "near": False}, chunk_tokens=4096)
    one, many = tmp_path / "one", tmp_path / "many"
    manifest = prepare([str(tmp_path / "in")], one, **options)
    assert manifest["splits"]["val"]["documents"] == 1
    prepare([str(tmp_path / "in")], many, tasks=3, **options)
    assert_same_output(one, many)


def test_units_are_shared_out_in_order_by_size(tmp_path: Path):
    for index, words in enumerate([400, 400, 400, 400, 1600, 100, 100, 100]):
        write_jsonl_texts(tmp_path / "in" / f"{index}.jsonl", [prose(index, words=words)])
    plan = tasks.make_plan([str(tmp_path / "in")], [], PrepareOptions(), 3)
    assert plan.shares[0] == 0 and plan.shares[-1] == len(plan.units) == 8
    assert plan.shares == sorted(plan.shares) and plan.tasks == 3
    assert all(plan.shares[t] < plan.shares[t + 1] for t in range(3)), "every task has work"
    assert [u.last for u in plan.units] == [False] * 7 + [True]


def test_a_large_jsonl_file_is_read_in_pieces_that_give_the_documents_of_a_whole_read(tmp_path: Path):
    lines = [json.dumps({"text": prose(seed, words=20 + seed % 30)}) for seed in range(300)]
    # Blank lines, a malformed record and a missing final newline: ids and locations name file lines.
    lines[7], lines[150] = "", '{"text": "unterminated'
    (tmp_path / "big.jsonl").write_text("\n".join(lines))
    whole_report, pieces_report = ReadReport(), ReadReport()
    whole = list(documents_for(str(tmp_path / "big.jsonl"), whole_report))
    units = split_large_files(plan_reads([str(tmp_path / "big.jsonl")], ReadReport()), piece_bytes=2000)
    assert len(units) > 10 and [u.last for u in units] == [False] * (len(units) - 1) + [True]
    assert all(u.lines.end - u.lines.start >= 2000 for u in units[:-1])
    pieced = [d for unit in units for d in unit_documents(unit, pieces_report)]
    assert pieced == list(whole[0][1]) and len(pieced) == 298
    assert pieces_report.malformed_locations == whole_report.malformed_locations
    assert [m.split(": ")[0] for m in whole_report.malformed_locations] == [f"{tmp_path / 'big.jsonl'}:151"]


def test_tasks_share_a_large_jsonl_file_and_write_the_bytes_one_process_writes(
    task_inputs, reference, tmp_path: Path, monkeypatch
):
    # Pieces of at least 4 KB: each JSONL file of the inputs is cut, so the tasks share every one.
    monkeypatch.setattr(tasks, "MIN_PIECE_BYTES", 4096)
    plan = tasks.make_plan(task_inputs["inputs"], task_inputs["val_inputs"], PrepareOptions(**OPTIONS), 3)
    assert sum(unit.lines is not None for unit in plan.units) > 10
    assert "from line" in " ".join(plan.describe(t) for t in range(3))
    out = tmp_path / "out"
    prepare(task_inputs["inputs"], out, val_inputs=task_inputs["val_inputs"], tasks=3, num_proc=2, **OPTIONS)
    assert_same_output(reference, out)


def test_what_tasks_cannot_do_is_refused_with_a_reason(task_inputs, tmp_path: Path):
    with pytest.raises(ValueError, match="max_documents_per_source"):
        prepare(task_inputs["inputs"], tmp_path / "a", tasks=2, max_documents_per_source=5)
    work = tmp_path / "work"
    tasks.save_plan(tasks.make_plan(task_inputs["inputs"], [], PrepareOptions(), 2), work)
    with pytest.raises(ValueError, match="another prepare job"):
        prepare(task_inputs["inputs"], tmp_path / "b", tasks=3, work_dir=work)
    with pytest.raises(ValueError, match="tasks"):
        prepare(task_inputs["inputs"], tmp_path / "c", tasks=0)


def test_the_job_state_is_readable(task_inputs, tmp_path: Path):
    """The plan says what each task reads, for the message of a failed task and for a person."""
    plan = tasks.make_plan(task_inputs["inputs"], task_inputs["val_inputs"], PrepareOptions(), 2)
    described = [plan.describe(t) for t in range(2)]
    assert all("read units" in d or d.endswith(".jsonl") or d.endswith(".txt") for d in described)
    assert json.dumps(plan.unread_files) == '{".yaml": 1}'


@pytest.mark.slow  # every array task is a new Python process: about 20 s
def test_slurm_submits_the_phases_as_dependent_job_arrays_that_write_the_same_bytes(
    task_inputs, reference, tmp_path: Path, monkeypatch
):
    cluster = tmp_path / "cluster"
    env = fake_slurm.install(cluster)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "data"
    submitted = prepare(
        task_inputs["inputs"],
        out,
        val_inputs=task_inputs["val_inputs"],
        tasks=2,
        work_dir=tmp_path / "work",
        slurm={"partition": "cpu", "time": "1:00:00", "cpus_per_task": 2},
        **OPTIONS,
    )
    assert submitted is None and not out.exists(), "submitting returns at once; the jobs write the data"
    phase_jobs = [
        (job_id, script, arguments)
        for job_id, (script, arguments) in enumerate(fake_slurm.submitted(cluster), start=1)
        if "launch_pickled_pipeline" in script
    ]
    assert [re.search(r"--job-name=(\S+)", s).group(1) for _, s, _ in phase_jobs] == [
        f"lit-pretrain-prepare-{phase}" for phase in engine.PHASES
    ]
    assert [re.search(r"--array=(\S+)", s).group(1).split("%")[0] for _, s, _ in phase_jobs] == [
        "0-1",
        "0-1",
        "0-0",
        "0-1",
        "0-1",
        "0-0",
    ]
    for (previous_id, _, _), (_, script, arguments) in zip(phase_jobs[:-1], phase_jobs[1:], strict=True):
        assert f"--dependency=afterok:{previous_id}" in arguments, "each phase waits for the previous one"
        assert "--partition=cpu" in script and "--cpus-per-task=2" in script
    fake_slurm.run_jobs(cluster, env)
    assert_same_output(reference, out)
