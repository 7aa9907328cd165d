"""Resume fingerprints: a run that differs from its checkpoint is refused, naming what changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lit_pretrain.checkpoint.fingerprint import check_resume_fingerprint, elastic_changes
from lit_pretrain.cli import main
from tests.helpers.models import TEST_MODEL_OVERRIDES
from tests.helpers.runs import fit_args


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("--data.seq_len", "16"), "seq_len: checkpoint 32, now 16"),
        (("--model.model_overrides", json.dumps(dict(TEST_MODEL_OVERRIDES, n_layer=3))), "model.n_layer"),
        (("--data.micro_batch_size", "2"), "micro_batch_size: checkpoint 4, now 2"),
        (("--trainer.accumulate_grad_batches", "2"), "accumulate_grad_batches"),
        (("--data.num_workers", "1"), "--data.elastic_resume true"),
    ],
    ids=["sequence-length", "model-shape", "micro-batch", "accumulation", "worker-count"],
)
def test_resuming_a_different_run_names_what_changed(
    small_corpus: Path, three_step_run: Path, tmp_path: Path, change: tuple[str, str], named: str
):
    args = fit_args(small_corpus, three_step_run, "--trainer.max_steps", "5", "--ckpt_path", "last", *change)
    with pytest.raises(SystemExit, match="fit: error: cannot resume") as error:
        main(args)
    assert named in str(error.value)


def test_resuming_on_other_data_names_the_dataset(small_corpus: Path, three_step_run: Path, tmp_path: Path):
    from lit_pretrain.data.prepare import prepare

    other = tmp_path / "other"  # the same tokenizer, fewer documents
    prepare(
        ["python-stdlib"],
        other,
        tokenizer=small_corpus / "tokenizer.json",
        val_fraction=0.1,
        max_documents_per_source=20,
    )
    with pytest.raises(SystemExit, match=r"cannot resume[\s\S]*data\.data_dir[\s\S]*data\.tokens"):
        main(fit_args(other, three_step_run, "--trainer.max_steps", "5", "--ckpt_path", "last"))


def test_data_parallel_size_change_is_refused_unless_elastic():
    saved = {"data_parallel_size": 1, "num_workers": 2, "seq_len": 32}
    now = {"data_parallel_size": 2, "num_workers": 2, "seq_len": 32}
    with pytest.raises(ValueError, match=r"data_parallel_size: checkpoint 1, now 2[\s\S]*elastic_resume"):
        check_resume_fingerprint(saved, now, elastic=False)
    check_resume_fingerprint(saved, now, elastic=True)  # allowed: no error
    assert elastic_changes(saved, now) == ["data_parallel_size: 1 -> 2"]
    with pytest.raises(ValueError, match="seq_len"):
        check_resume_fingerprint(saved, dict(now, seq_len=64), elastic=True)


def test_elastic_resume_continues_with_another_worker_count(
    small_corpus: Path, three_step_run: Path, tmp_path: Path
):
    import shutil

    run_dir = shutil.copytree(three_step_run, tmp_path / "run", symlinks=True)
    args = fit_args(small_corpus, run_dir, "--trainer.max_steps", "6", "--ckpt_path", "last")
    with pytest.warns(UserWarning, match="resuming elastically although num_workers: 0 -> 1"):
        main([*args, "--data.num_workers", "1", "--data.elastic_resume", "true"])
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
