"""Make a small checkpoint with the pre-refactor code (commit 1722c56), for the legacy-load test."""
import json, shutil, sys
from pathlib import Path
import torch
from lit_pretrain.data.prepare import prepare
from lit_pretrain.cli import main
from lit_pretrain.generate_cli import load_checkpoint

root = Path("/tmp/legacy")
data = root / "data"
if not (data / "manifest.json").exists():
    prepare(["python-stdlib"], data, vocab_size=512, val_fraction=0.1, max_documents_per_source=10)
overrides = {"vocab_size": 512, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "n_embd": 32, "block_size": 64}
run = root / "run"
shutil.rmtree(run, ignore_errors=True)
main(["fit", "--config", "configs/tiny.yaml", "--model.model_name", "llama-debug", "--model.model_overrides", json.dumps(overrides),
      "--model.warmup_steps", "1", "--data.data_dir", str(data), "--data.seq_len", "32", "--data.micro_batch_size", "2",
      "--data.val_batch_size", "2", "--trainer.default_root_dir", str(run), "--trainer.max_steps", "2",
      "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false",
      "--checkpoint.every_n_train_steps", "2"])
ckpt = run / "checkpoints" / "step-0000002.ckpt"
module, raw = load_checkpoint(ckpt)
tokens = torch.randint(0, 512, (2, 16), generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    logits = module.model(tokens)
print(raw["hyper_parameters"])
out = Path("tests/data/legacy"); out.mkdir(parents=True, exist_ok=True)
shutil.copy(ckpt, out / "llama-step2-1722c56.ckpt")
torch.save({"tokens": tokens, "logits": logits}, out / "llama-step2-1722c56.expected.pt")
