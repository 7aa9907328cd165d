"""`lit-pretrain generate`: several prompts, a prompts file, streaming, seeds, precision and user errors."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from lit_pretrain.checkpoint.loading import load_model
from lit_pretrain.cli import generate as generate_cli
from lit_pretrain.cli import main
from lit_pretrain.cli.generate import TextStream
from lit_pretrain.data.tokenizer import train_bpe_tokenizer
from lit_pretrain.inference.generation import generate
from lit_pretrain.model import GPT, ModelConfig
from tests.helpers.models import TEST_MODEL_OVERRIDES

# ASCII only, so that every non-ASCII character stays split into its UTF-8 bytes, one token each.
TRAINING_TEXT = ["def main(x):\n    return x + 1\n", "the quick brown fox jumps over the lazy dog. " * 3]
PROMPTS = ["def main(", "the fox"]
HEADER = re.compile(r"^== sample (\d+)(?: of prompt (\d+))? \(checkpoint step 7, [^\n]*\)\n", re.MULTILINE)


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(iter(TRAINING_TEXT), vocab_size=300)


@pytest.fixture(scope="module")
def checkpoint(tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint file as `fit` writes it, for the test model, with a small ASCII tokenizer inside."""
    overrides = dict(TEST_MODEL_OVERRIDES, vocab_size=tokenizer.get_vocab_size(), init_std=0.2)
    torch.manual_seed(0)
    model = GPT(ModelConfig.from_name("tiny", **overrides))
    path = tmp_path_factory.mktemp("generate") / "last.ckpt"
    torch.save(
        {
            "state_dict": {f"model.{key}": value for key, value in model.state_dict().items()},
            "hyper_parameters": {"model_name": "tiny", "model_overrides": overrides},
            "global_step": 7,
            "tokenizer_json": tokenizer.to_str(),
            "data_manifest": {"eos_id": 0, "vocab_size": tokenizer.get_vocab_size()},
        },
        path,
    )
    return path


def run(checkpoint: Path, capsys, *args: str) -> str:
    main(["generate", "--checkpoint", str(checkpoint), "--device", "cpu", *args])
    return capsys.readouterr().out


def samples(out: str) -> list[tuple[int, int | None, str]]:
    """(sample, prompt, text) of each header and the text below it."""
    parts = HEADER.split(out)
    assert parts[0] == ""
    return [
        (int(s), int(p) if p else None, text.removesuffix("\n"))
        for s, p, text in zip(parts[1::3], parts[2::3], parts[3::3], strict=True)
    ]


def alone(
    checkpoint: Path, tokenizer, text: str, max_new_tokens: int, seed: int | None = None, **options
) -> str:
    """What the library gives for one prompt on its own, decoded as the CLI decodes it."""
    model = load_model(checkpoint).model
    ids = torch.tensor(tokenizer.encode(text, add_special_tokens=False).ids)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    tokens = generate(model, ids, max_new_tokens, eos_id=0, generator=generator, **options)
    return tokenizer.decode(tokens.tolist(), skip_special_tokens=True)


def test_two_prompts_give_a_header_and_the_single_prompt_text_each(checkpoint, tokenizer, capsys):
    out = run(
        checkpoint,
        capsys,
        "--prompt",
        PROMPTS[0],
        "--prompt",
        PROMPTS[1],
        "--temperature",
        "0",
        "--max_new_tokens",
        "12",
    )
    assert "== sample 1 of prompt 1 (checkpoint step 7, temperature 0.0, top_k 50, top_p None)" in out
    expected = [
        (1, p + 1, alone(checkpoint, tokenizer, text, 12, temperature=0)) for p, text in enumerate(PROMPTS)
    ]
    assert samples(out) == expected
    assert all(
        text.startswith(prompt) and len(text) > len(prompt)
        for (_, _, text), prompt in zip(expected, PROMPTS, strict=True)
    )


def test_a_prompts_file_is_one_prompt_per_non_empty_line(checkpoint, capsys, tmp_path: Path):
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text(f"{PROMPTS[0]}\n\n{PROMPTS[1]}\n", encoding="utf-8")
    options = ["--temperature", "0.9", "--top_p", "0.9", "--max_new_tokens", "10"]
    from_file = run(checkpoint, capsys, "--prompts_file", str(prompts_file), *options)
    from_flags = run(checkpoint, capsys, "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], *options)
    assert from_file == from_flags and len(samples(from_file)) == 2


def test_a_prompts_samples_do_not_depend_on_the_other_prompts_or_the_batch_size(
    checkpoint, tokenizer, capsys
):
    options = [
        "--temperature",
        "1.0",
        "--top_k",
        "20",
        "--max_new_tokens",
        "10",
        "--num_samples",
        "2",
        "--seed",
        "3",
    ]
    both = samples(run(checkpoint, capsys, "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], *options))
    assert [(s, p) for s, p, _ in both] == [(1, 1), (2, 1), (1, 2), (2, 2)]
    one_by_one = samples(
        run(checkpoint, capsys, "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--batch_size", "1", *options)
    )
    assert one_by_one == both
    first_only = samples(run(checkpoint, capsys, "--prompt", PROMPTS[0], *options))
    assert [text for _, _, text in first_only] == [text for _, p, text in both if p == 1]
    # Sample s is seeded with seed + s.
    expected = [
        alone(checkpoint, tokenizer, PROMPTS[0], 10, seed=3 + s, temperature=1.0, top_k=20) for s in range(2)
    ]
    assert [text for _, _, text in first_only] == expected
    assert expected[0] != expected[1]


class Recorder:
    """A stand-in for sys.stdout that keeps each flushed chunk."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.chunks.append(self.pending)
            self.pending = ""


def test_one_prompt_and_one_sample_is_streamed(checkpoint, tokenizer, monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(sys, "stdout", recorder)
    prompt = "café € "  # multi-byte characters, each split into byte tokens by this tokenizer
    main(
        [
            "generate",
            "--checkpoint",
            str(checkpoint),
            "--device",
            "cpu",
            "--prompt",
            prompt,
            "--max_new_tokens",
            "30",
            "--temperature",
            "0.9",
            "--seed",
            "11",
        ]
    )
    recorder.flush()
    out = "".join(recorder.chunks)
    header, text = out.split("\n", 1)
    assert header == "== sample 1 (checkpoint step 7, temperature 0.9, top_k 50, top_p None)"
    assert text == alone(checkpoint, tokenizer, prompt, 30, seed=11, temperature=0.9, top_k=50) + "\n"
    # The header, the prompt, then the new text in several pieces as it was generated.
    assert recorder.chunks[:2] == [header + "\n", prompt]
    assert len(recorder.chunks) > 5


def test_text_stream_never_splits_a_multi_byte_character(tokenizer):
    text = "x = 'é€😀' # 日本"
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert len(ids) > len(text), "non-ASCII characters are several tokens each"
    prompt_ids, new_ids = ids[:2], ids[2:]
    stream = TextStream(tokenizer, prompt_ids)
    pieces = [stream.push(token) for token in new_ids]
    assert all("\ufffd" not in piece for piece in pieces)
    assert "" in pieces, "some tokens completed no character and were held back"
    assert stream.flush() == ""
    assert tokenizer.decode(prompt_ids) + "".join(pieces) == text
    # Bytes that never complete a character are held back, and come out at the end.
    euro = tokenizer.encode("€", add_special_tokens=False).ids
    assert len(euro) == 3
    incomplete = TextStream(tokenizer, [])
    assert incomplete.push(euro[0]) == incomplete.push(euro[1]) == ""
    assert incomplete.flush() == "\ufffd"


def test_precision_sets_the_dtype_the_model_runs_in(checkpoint, capsys, monkeypatch):
    # float16 works on the CPU with this torch, so it is not refused.
    dtypes = []

    def spy(*args, **kwargs):
        loaded = load_model(*args, **kwargs)
        dtypes.append(loaded.model.wte.weight.dtype)
        return loaded

    monkeypatch.setattr(generate_cli, "load_model", spy)
    for precision in ("bfloat16", "float16"):
        out = run(
            checkpoint,
            capsys,
            "--prompt",
            "def",
            "--precision",
            precision,
            "--max_new_tokens",
            "5",
            "--temperature",
            "0",
        )
        assert out.startswith("== sample 1 (checkpoint step 7") and "\ndef" in out
    assert dtypes == [torch.bfloat16, torch.float16]


def test_default_device_prefers_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert generate_cli.default_device() == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert generate_cli.default_device() == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert generate_cli.default_device() == "cuda"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top_p", "1.5"], r"top_p must be in \(0, 1\], got 1.5"),
        (["--top_k", "0"], "top_k must be positive"),
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--num_samples", "0"], "--num_samples must be at least 1"),
        (["--prompts_file", "{tmp}/missing.txt"], "--prompts_file .*missing.txt: no such file"),
        (["--device", "nonsense"], "--device 'nonsense' is not a device"),
    ],
)
def test_bad_options_are_one_line_user_errors(checkpoint, tmp_path: Path, args: list[str], message: str):
    args = [arg.format(tmp=tmp_path) for arg in args]
    with pytest.raises(SystemExit, match=f"^lit-pretrain generate: error: {message}"):
        main(["generate", "--checkpoint", str(checkpoint), "--device", "cpu", *args])


def test_a_missing_checkpoint_is_a_user_error(tmp_path: Path):
    with pytest.raises(SystemExit, match="^lit-pretrain generate: error: no checkpoint at .*missing.ckpt"):
        main(["generate", "--checkpoint", str(tmp_path / "missing.ckpt"), "--prompt", "x", "--prompt", "y"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_device_is_a_user_error(checkpoint):
    with pytest.raises(SystemExit, match="--device cuda: CUDA is not available on this machine"):
        main(["generate", "--checkpoint", str(checkpoint), "--device", "cuda"])
