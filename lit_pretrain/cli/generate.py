"""`lit-pretrain generate`: sample text from a checkpoint with the tokenizer stored inside it."""

from __future__ import annotations

from pathlib import Path

import torch
from jsonargparse import ArgumentParser
from tokenizers import Tokenizer

from lit_pretrain.checkpoint.io import read_checkpoint
from lit_pretrain.data.tokenizer import find_eos_id, load_tokenizer
from lit_pretrain.inference.generation import generate
from lit_pretrain.training.module import LitPretrain


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[LitPretrain, dict]:
    """The module (in eval mode) and the raw checkpoint dict of a `lit-pretrain fit` checkpoint."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no checkpoint at {path}: train first (`make pretrain`) or pass --checkpoint"
        )
    # weights_only=False: Lightning checkpoints hold hyperparameters and loop state. Load only files you trust.
    checkpoint = read_checkpoint(path)
    if "hyper_parameters" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a lit-pretrain checkpoint (no hyper_parameters/state_dict)")
    # LightningCLI adds private entries such as `_instantiator`; the constructor takes only the public ones.
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    # The weights come from this checkpoint, not from the one the run was initialised from.
    hparams.pop("init_from", None)
    module = LitPretrain(**hparams)
    module.configure_model()
    module.load_state_dict(checkpoint["state_dict"])
    return module.to(device).eval(), checkpoint


def checkpoint_tokenizer(checkpoint: dict, tokenizer_path: str | None) -> Tokenizer:
    """The tokenizer given on the command line, else the one stored in the checkpoint."""
    if tokenizer_path:
        return load_tokenizer(tokenizer_path)
    if "tokenizer_json" not in checkpoint:
        raise ValueError("the checkpoint stores no tokenizer: pass --tokenizer PATH/tokenizer.json")
    return Tokenizer.from_str(checkpoint["tokenizer_json"])


def main(argv: list[str]) -> None:
    """Parse `argv`, load the checkpoint and print samples."""
    parser = ArgumentParser(prog="lit-pretrain generate", description="Generate text from a checkpoint.")
    parser.add_argument("--checkpoint", type=str, required=True, help="a .ckpt written by lit-pretrain fit")
    parser.add_argument("--prompt", type=str, default="", help="text to continue")
    parser.add_argument("--max_new_tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding")
    parser.add_argument("--top_k", type=int | None, default=50, help="sample among the k likeliest tokens")
    parser.add_argument("--num_samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--tokenizer", type=str | None, default=None, help="override the stored tokenizer")
    parser.add_argument("--device", type=str, default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        module, checkpoint = load_checkpoint(args.checkpoint, args.device)
        tokenizer = checkpoint_tokenizer(checkpoint, args.tokenizer)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"lit-pretrain generate: error: {err}") from err
    eos_id = checkpoint.get("data_manifest", {}).get("eos_id", find_eos_id(tokenizer))
    prompt_ids = tokenizer.encode(args.prompt, add_special_tokens=False).ids or [eos_id]
    prompt = torch.tensor(prompt_ids, dtype=torch.long, device=args.device)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    step = checkpoint.get("global_step", "?")
    for index in range(args.num_samples):
        tokens = generate(
            module.model,
            prompt,
            args.max_new_tokens,
            args.temperature,
            args.top_k,
            eos_id,
            generator=generator,
        )
        text = tokenizer.decode(tokens.tolist(), skip_special_tokens=True)
        print(
            f"== sample {index + 1} (checkpoint step {step}, temperature {args.temperature}, top_k {args.top_k})"
        )
        print(text, flush=True)
