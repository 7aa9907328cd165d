"""lit_pretrain: pre-train decoder-only language models with PyTorch Lightning."""

__version__ = "0.1.0"
