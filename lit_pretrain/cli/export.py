"""`lit-pretrain export`: a checkpoint as a Hugging Face model directory (the work is interop/export.py)."""

from __future__ import annotations

from pathlib import Path

from jsonargparse import ArgumentParser

from lit_pretrain.interop.export import DTYPES, export_checkpoint


def main(argv: list[str]) -> None:
    """Parse `argv`, export the checkpoint and say how to load it."""
    parser = ArgumentParser(
        prog="lit-pretrain export",
        description="Write a checkpoint as a directory that transformers loads with from_pretrained.",
    )
    parser.add_argument(
        "--checkpoint", type=str, required=True, help="a .ckpt file or sharded checkpoint dir"
    )
    parser.add_argument("--output_dir", type=str, required=True, help="a new (or empty) directory")
    parser.add_argument("--dtype", type=str, default="float32", choices=list(DTYPES), help="weights' dtype")
    parser.add_argument(
        "--max_shard_size", type=str, default="5GB", help="split model.safetensors above this"
    )
    options = parser.parse_args(argv)
    if not Path(options.checkpoint).exists():
        raise FileNotFoundError(f"no checkpoint at {options.checkpoint}")
    output_dir = export_checkpoint(
        options.checkpoint, options.output_dir, options.dtype, options.max_shard_size
    )
    print(f"Exported to {output_dir}:")
    for path in sorted(output_dir.iterdir()):
        print(f"  {path.name}")
    print(
        "Load it with:\n"
        "  from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f'  model = AutoModelForCausalLM.from_pretrained("{output_dir}")\n'
        f'  tokenizer = AutoTokenizer.from_pretrained("{output_dir}")'
    )
