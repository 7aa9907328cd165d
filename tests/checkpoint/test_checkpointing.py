"""Atomic checkpoint files, retention, resume fingerprints, init_from and skipping non-finite steps."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from lit_pretrain.checkpoint.fingerprint import check_resume_fingerprint
from lit_pretrain.checkpoint.io import (
    atomic_torch_save,
    find_last_checkpoint,
    remove_leftovers,
    temporary_path,
)
from lit_pretrain.cli import main
from lit_pretrain.data.datamodule import PretrainDataModule
from lit_pretrain.training.module import LitPretrain
from tests.helpers.models import TEST_MODEL_OVERRIDES
from tests.helpers.runs import fit_args


def test_atomic_save_leaves_only_the_final_file(tmp_path: Path):
    target = tmp_path / "step-0000001.ckpt"
    atomic_torch_save({"x": torch.arange(3)}, target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert torch.equal(torch.load(target)["x"], torch.arange(3))


def test_failed_save_leaves_the_previous_file_and_no_temporary(tmp_path: Path):
    target = tmp_path / "step-0000001.ckpt"
    atomic_torch_save({"x": 1}, target)
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises
        atomic_torch_save({"x": lambda: None}, target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert torch.load(target)["x"] == 1


def test_leftovers_are_removed_and_never_chosen_as_last(tmp_path: Path):
    for step in (3, 7):
        atomic_torch_save({"step": step}, tmp_path / f"step-{step:07d}.ckpt")
    leftover = temporary_path(tmp_path / "step-0000011.ckpt")
    leftover.write_bytes(b"half a checkpoint")
    assert find_last_checkpoint(tmp_path) == tmp_path / "step-0000007.ckpt"
    assert remove_leftovers(tmp_path) == [leftover]
    assert find_last_checkpoint(tmp_path / "missing") is None


def test_retention_keeps_the_last_k_and_every_mth(small_corpus: Path, tmp_path: Path):
    main(
        fit_args(
            small_corpus,
            tmp_path,
            *("--trainer.max_steps", "9", "--trainer.val_check_interval", "100"),
            *("--checkpoint.every_n_train_steps", "1", "--checkpoint.keep_last", "2"),
            *("--checkpoint.keep_every", "4"),
        )
    )
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step-0000004.ckpt", "step-0000008.ckpt", "step-0000009.ckpt"]
    assert (tmp_path / "checkpoints" / "last.ckpt").resolve().name == "step-0000009.ckpt"


def test_keeping_fewer_than_two_checkpoints_is_refused(small_corpus: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="keep_last must be at least 2"):
        main(fit_args(small_corpus, tmp_path, "--checkpoint.keep_last", "1"))


@pytest.fixture(scope="module")
def three_step_run(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("three-steps")
    main(fit_args(small_corpus, run_dir, "--trainer.max_steps", "3", "--trainer.val_check_interval", "100"))
    return run_dir


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
    with pytest.raises(ValueError, match="cannot resume") as error:
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
    with pytest.raises(ValueError, match=r"cannot resume[\s\S]*data\.data_dir[\s\S]*data\.tokens"):
        main(fit_args(other, three_step_run, "--trainer.max_steps", "5", "--ckpt_path", "last"))


def test_data_parallel_size_change_is_refused_unless_elastic():
    saved = {"data_parallel_size": 1, "num_workers": 2, "seq_len": 32}
    now = {"data_parallel_size": 2, "num_workers": 2, "seq_len": 32}
    with pytest.raises(ValueError, match=r"data_parallel_size: checkpoint 1, now 2[\s\S]*elastic_resume"):
        check_resume_fingerprint(saved, now, elastic=False)
    assert check_resume_fingerprint(saved, now, elastic=True) == ["data_parallel_size: 1 -> 2"]
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


def test_init_from_loads_the_weights(small_corpus: Path, three_step_run: Path, capsys):
    source = three_step_run / "checkpoints" / "step-0000003.ckpt"
    validate = fit_args(small_corpus, three_step_run)
    validate[0] = "validate"
    main([*validate, "--ckpt_path", str(source)])
    from_checkpoint = capsys.readouterr().out
    main([*validate, "--model.init_from", str(source)])
    captured = capsys.readouterr()
    from_init = captured.out
    assert f"initialised the model from {source} (step 3)" in captured.out + captured.err
    val_line = [line for line in from_checkpoint.splitlines() if "val/loss" in line]
    assert val_line and val_line == [line for line in from_init.splitlines() if "val/loss" in line]


def test_init_from_a_different_model_is_a_clear_error(
    small_corpus: Path, three_step_run: Path, tmp_path: Path
):
    source = three_step_run / "checkpoints" / "step-0000003.ckpt"
    args = fit_args(small_corpus, tmp_path, "--model.init_from", str(source))
    args[args.index("--model.model_overrides") + 1] = json.dumps(dict(TEST_MODEL_OVERRIDES, n_embd=32))
    with pytest.raises(ValueError, match=r"holds a different model:\n  n_embd: checkpoint 64, now 32"):
        main(args)


class _LossAt(LitPretrain):
    """LitPretrain whose loss is replaced by NaN (or inf) at chosen optimizer steps."""

    def __init__(self, bad_steps: dict[int, float], **kwargs) -> None:
        super().__init__(**kwargs)
        self.bad_steps = bad_steps
        self.weights_before_step: dict[int, torch.Tensor] = {}

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        self.weights_before_step[self.trainer.global_step] = self.model.wte.weight.detach().clone()

    def _loss(self, batch):
        loss = super()._loss(batch)
        bad = self.bad_steps.get(self.trainer.global_step) if self.training else None
        return loss if bad is None else loss * bad


def _train(small_corpus: Path, module: LitPretrain, steps: int, **trainer_kwargs) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        **trainer_kwargs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        enable_model_summary=False,
    )
    trainer.fit(module, PretrainDataModule(str(small_corpus), seq_len=32, micro_batch_size=4))
    return trainer


def test_a_nan_step_is_skipped_and_leaves_the_weights_unchanged(small_corpus: Path):
    module = _LossAt(
        {2: float("nan"), 3: float("inf")}, model_name="tiny", model_overrides=TEST_MODEL_OVERRIDES
    )
    with pytest.warns(UserWarning, match="the loss is not finite; skipped this optimizer step"):
        _train(small_corpus, module, 6)
    weights = module.weights_before_step
    assert torch.equal(weights[2], weights[3]) and torch.equal(weights[3], weights[4])
    assert not torch.equal(weights[1], weights[2]) and not torch.equal(weights[4], weights[5])
    assert module.skipped_steps == 2 and torch.isfinite(module.model.wte.weight).all()


def test_fp16_mixed_precision_lets_the_grad_scaler_skip_a_nan_step(small_corpus: Path):
    # Lightning turns precision="16-mixed" into bf16 on CPU; the plugin given directly keeps fp16 autocast
    # and a real GradScaler, the path GPUs take.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    precision = MixedPrecision("16-mixed", "cpu", scaler)
    module = _LossAt({2: float("nan")}, model_name="tiny", model_overrides=TEST_MODEL_OVERRIDES)
    with pytest.warns(UserWarning, match="skipped this optimizer step"):
        trainer = _train(small_corpus, module, 5, plugins=[precision], gradient_clip_val=1.0)
    assert trainer.precision == "16-mixed"
    weights = module.weights_before_step
    assert torch.equal(weights[2], weights[3]), "the scaler skipped the step"
    assert not torch.equal(weights[1], weights[2]) and not torch.equal(weights[3], weights[4])
    assert scaler.get_scale() < 2.0**10, "the scaler backed off after the non-finite gradients"
    assert module.skipped_steps == 1 and torch.isfinite(module.model.wte.weight).all()


def test_too_many_bad_steps_in_a_row_stop_the_run(small_corpus: Path):
    module = _LossAt(
        {step: float("nan") for step in range(1, 10)},
        model_name="tiny",
        model_overrides=TEST_MODEL_OVERRIDES,
        max_consecutive_skipped_steps=3,
    )
    with (
        pytest.warns(UserWarning),
        pytest.raises(RuntimeError, match="NaN or infinite for 4 optimizer steps"),
    ):
        _train(small_corpus, module, 10)


def test_the_final_step_is_always_saved(small_corpus: Path, tmp_path: Path):
    main(fit_args(small_corpus, tmp_path, "--trainer.max_steps", "4", "--trainer.val_check_interval", "100"))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step-0000003.ckpt", "step-0000004.ckpt"]
    assert (tmp_path / "checkpoints" / "last.ckpt").resolve().name == "step-0000004.ckpt"


def test_init_from_a_missing_checkpoint_is_a_clear_error(small_corpus: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="--model.init_from .*missing.ckpt: no such checkpoint"):
        main(fit_args(small_corpus, tmp_path, "--model.init_from", str(tmp_path / "missing.ckpt")))


def test_a_checkpoint_with_the_old_fused_qkv_loads_as_weights_but_does_not_resume(
    small_corpus: Path, three_step_run: Path, tmp_path: Path
):
    checkpoint = torch.load(three_step_run / "checkpoints" / "step-0000003.ckpt", weights_only=False)
    expected = dict(checkpoint["state_dict"])
    state = checkpoint["state_dict"]
    for prefix in sorted({key.split(".attn.")[0] for key in state if ".attn.q." in key}):
        parts = [state.pop(f"{prefix}.attn.{name}.weight") for name in "qkv"]
        state[f"{prefix}.attn.qkv.weight"] = torch.cat(parts)  # the layout before the split
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)

    from lit_pretrain.cli.generate import load_checkpoint

    module, _ = load_checkpoint(old)
    for key, value in expected.items():
        assert torch.equal(module.state_dict()[key], value), key
    with pytest.raises(ValueError, match="fused qkv projection .* --model.init_from PATH"):
        main(fit_args(small_corpus, tmp_path / "resumed", "--ckpt_path", str(old)))
    main(fit_args(small_corpus, tmp_path / "init", "--trainer.max_steps", "1", "--model.init_from", str(old)))


def test_resuming_an_old_fused_qkv_sharded_checkpoint_is_a_clear_error(tmp_path: Path):
    import torch.distributed.checkpoint as dcp

    from lit_pretrain.checkpoint.io import AtomicModelParallelStrategy

    old = tmp_path / "old-sharded.ckpt"
    dcp.save({"state_dict": {"model.blocks.0.attn.qkv.weight": torch.zeros(4, 2)}}, checkpoint_id=old)
    with pytest.raises(ValueError, match="fused qkv projection .* --model.init_from PATH"):
        AtomicModelParallelStrategy().load_checkpoint(old)
