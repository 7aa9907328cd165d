"""`lit-pretrain generate`: sample text from a checkpoint with the tokenizer stored inside it."""

from __future__ import annotations

from pathlib import Path

import torch
from jsonargparse import ArgumentParser
from tokenizers import Tokenizer

from lit_pretrain.checkpoint.loading import LoadedModel, load_model
from lit_pretrain.data.tokenizer import find_eos_id, load_tokenizer
from lit_pretrain.inference.generation import generate


def checkpoint_tokenizer(loaded: LoadedModel, tokenizer_path: str | None) -> Tokenizer:
    """The tokenizer given on the command line, else the one stored in the checkpoint."""
    if tokenizer_path:
        return load_tokenizer(tokenizer_path)
    if loaded.tokenizer_json is None:
        raise ValueError("the checkpoint stores no tokenizer: pass --tokenizer PATH/tokenizer.json")
    return Tokenizer.from_str(loaded.tokenizer_json)


def build_parser() -> ArgumentParser:
    """Options of `lit-pretrain generate`."""
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
    return parser


def main(argv: list[str]) -> None:
    """Parse `argv`, load the checkpoint's model and print samples."""
    args = build_parser().parse_args(argv)
    path = Path(args.checkpoint)
    if not path.exists():
        raise FileNotFoundError(
            f"no checkpoint at {path}: train first (`make pretrain`) or pass --checkpoint"
        )
    loaded = load_model(path, args.device)
    tokenizer = checkpoint_tokenizer(loaded, args.tokenizer)
    eos_id = (loaded.data_manifest or {}).get("eos_id", find_eos_id(tokenizer))
    prompt_ids = tokenizer.encode(args.prompt, add_special_tokens=False).ids or [eos_id]
    prompt = torch.tensor(prompt_ids, dtype=torch.long, device=args.device)
    generator = torch.Generator(device=args.device).manual_seed(args.seed)
    step = loaded.global_step if loaded.global_step is not None else "?"
    for index in range(args.num_samples):
        tokens = generate(
            loaded.model,
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
