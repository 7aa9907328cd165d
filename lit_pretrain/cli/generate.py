"""`lit-pretrain generate`: sample text from a checkpoint with the tokenizer stored inside it.

Every prompt and sample is one row of a batch (`--batch_size` rows per forward pass). Sample s (counting
from 0) of every prompt draws from its own generator seeded with `--seed` + s, so a prompt's samples do
not depend on the other prompts, their order or the batch size (see `inference.generation`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from jsonargparse import ArgumentParser
from tokenizers import Tokenizer

from lit_pretrain.checkpoint.loading import LoadedModel, load_model
from lit_pretrain.data.tokenizer import find_eos_id, load_tokenizer
from lit_pretrain.inference.generation import check_sampling_options, generate_batch, stream_batch

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Tokens decoded again before the new ones when streaming: some decoders drop a leading space at the
# start of a sequence, and a window of context keeps each piece as it reads in the whole text.
STREAM_CONTEXT_TOKENS = 5


def default_device() -> str:
    """cuda if available, else mps if available, else cpu."""
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def check_device(device: str) -> None:
    """Raise ValueError for a device that is not a torch device or is not available on this machine."""
    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise ValueError(f"--device {device!r} is not a device: use cuda, mps or cpu") from err
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine (try --device cpu)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine (try --device cpu)")


def checkpoint_tokenizer(loaded: LoadedModel, tokenizer_path: str | None) -> Tokenizer:
    """The tokenizer given on the command line, else the one stored in the checkpoint."""
    if tokenizer_path:
        return load_tokenizer(tokenizer_path)
    if loaded.tokenizer_json is None:
        raise ValueError("the checkpoint stores no tokenizer: pass --tokenizer PATH/tokenizer.json")
    return Tokenizer.from_str(loaded.tokenizer_json)


def read_prompts(prompts: list[str] | None, prompts_file: str | None) -> list[str]:
    """The `--prompt` texts, then the non-empty lines of `--prompts_file`; one empty prompt if neither."""
    texts = list(prompts or [])
    if prompts_file is not None:
        path = Path(prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"--prompts_file {path}: no such file")
        texts += [line for line in path.read_text(encoding="utf-8").splitlines() if line]
        if not texts:
            raise ValueError(f"--prompts_file {path} holds no prompt (one prompt per non-empty line)")
    return texts or [""]


class TextStream:
    """Text of a growing list of token ids, handed out piece by piece, never half a multi-byte character."""

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int]) -> None:
        self._tokenizer = tokenizer
        self._ids = list(prompt_ids)
        self._start = max(0, len(self._ids) - STREAM_CONTEXT_TOKENS)  # where the decoded window starts
        self._emitted = len(self._ids)  # the ids whose text has been handed out end here

    def push(self, token: int) -> str:
        """Add a token; returns the text it completes ('' while a character's bytes are still incomplete)."""
        self._ids.append(token)
        before, text = self._window()
        # A byte-level tokenizer decodes an incomplete UTF-8 sequence at the end as U+FFFD: wait for the rest.
        if len(text) <= len(before) or text.endswith("\ufffd"):
            return ""
        self._start, self._emitted = self._emitted, len(self._ids)
        return text[len(before) :]

    def flush(self) -> str:
        """The text not handed out yet, complete or not (the end of generation)."""
        before, text = self._window()
        self._start = self._emitted = len(self._ids)
        return text[len(before) :]

    def _window(self) -> tuple[str, str]:
        decode = self._tokenizer.decode
        before = decode(self._ids[self._start : self._emitted], skip_special_tokens=True)
        return before, decode(self._ids[self._start :], skip_special_tokens=True)


def build_parser() -> ArgumentParser:
    """Options of `lit-pretrain generate`."""
    parser = ArgumentParser(prog="lit-pretrain generate", description="Generate text from a checkpoint.")
    parser.add_argument("--checkpoint", type=str, required=True, help="a .ckpt written by lit-pretrain fit")
    parser.add_argument(
        "--prompt",
        type=str,
        action="append",
        default=None,
        help="text to continue; repeat the flag for several prompts (none: one empty prompt)",
    )
    parser.add_argument(
        "--prompts_file", type=str | None, default=None, help="a text file of prompts, one per non-empty line"
    )
    parser.add_argument("--max_new_tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 for greedy decoding")
    parser.add_argument("--top_k", type=int | None, default=50, help="sample among the k likeliest tokens")
    parser.add_argument(
        "--top_p",
        type=float | None,
        default=None,
        help="nucleus sampling: among the likeliest tokens whose probability reaches p (1 or null: off)",
    )
    parser.add_argument("--num_samples", type=int, default=1, help="samples per prompt")
    parser.add_argument("--seed", type=int, default=1234, help="sample s of each prompt uses seed + s")
    parser.add_argument("--tokenizer", type=str | None, default=None, help="override the stored tokenizer")
    parser.add_argument("--device", type=str, default=default_device(), help="cuda, mps or cpu")
    parser.add_argument(
        "--precision",
        type=Literal["float32", "bfloat16", "float16"],
        default="float32",
        help="the dtype the model is loaded and run in",
    )
    parser.add_argument("--batch_size", type=int, default=16, help="rows (prompts x samples) per batch")
    return parser


def main(argv: list[str]) -> None:
    """Parse `argv`, load the checkpoint's model and print samples (streamed for one prompt and sample)."""
    args = build_parser().parse_args(argv)
    path = Path(args.checkpoint)
    if not path.exists():
        raise FileNotFoundError(
            f"no checkpoint at {path}: train first (`make pretrain`) or pass --checkpoint"
        )
    check_device(args.device)
    check_sampling_options(args.temperature, args.top_k, args.top_p)
    for name in ("num_samples", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.max_new_tokens < 0:
        raise ValueError(f"--max_new_tokens must be >= 0, got {args.max_new_tokens}")
    texts = read_prompts(args.prompt, args.prompts_file)

    loaded = load_model(path, args.device, PRECISIONS[args.precision])
    tokenizer = checkpoint_tokenizer(loaded, args.tokenizer)
    eos_id = (loaded.data_manifest or {}).get("eos_id")
    if eos_id is None:
        eos_id = find_eos_id(tokenizer)
    # An empty prompt starts a new document, which in the training data follows an EOS.
    prompt_ids = [tokenizer.encode(text, add_special_tokens=False).ids or [eos_id] for text in texts]
    step = loaded.global_step if loaded.global_step is not None else "?"
    settings = f"temperature {args.temperature}, top_k {args.top_k}, top_p {args.top_p}"

    def header(sample: int, prompt: int) -> str:
        of_prompt = f" of prompt {prompt + 1}" if len(texts) > 1 else ""
        return f"== sample {sample + 1}{of_prompt} (checkpoint step {step}, {settings})"

    rows = [(p, s) for p in range(len(texts)) for s in range(args.num_samples)]
    for first in range(0, len(rows), args.batch_size):
        batch = rows[first : first + args.batch_size]
        prompts = [torch.tensor(prompt_ids[p], dtype=torch.long) for p, _ in batch]
        options = dict(
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            eos_id=eos_id,
            generator=[torch.Generator(device=args.device).manual_seed(args.seed + s) for _, s in batch],
        )
        if len(rows) == 1:
            print(header(0, 0), flush=True)
            steps = stream_batch(loaded.model, prompts, args.max_new_tokens, **options)
            stream_sample(tokenizer, steps, prompt_ids[0])
            return
        outputs = generate_batch(loaded.model, prompts, args.max_new_tokens, **options)
        for (p, s), tokens in zip(batch, outputs, strict=True):
            print(header(s, p))
            print(tokenizer.decode(tokens.tolist(), skip_special_tokens=True), flush=True)


def stream_sample(tokenizer: Tokenizer, steps: Iterator[list[int | None]], prompt_ids: list[int]) -> None:
    """Print the prompt, then each piece of text as its tokens arrive from `steps` (one row), then a newline."""
    out = sys.stdout
    out.write(tokenizer.decode(prompt_ids, skip_special_tokens=True))
    out.flush()
    text = TextStream(tokenizer, prompt_ids)
    for (token,) in steps:
        if token is not None and (piece := text.push(token)):
            out.write(piece)
            out.flush()
    out.write(text.flush() + "\n")
    out.flush()
