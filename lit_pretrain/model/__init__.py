"""The decoder-only transformer, its configuration and its parameter/FLOP counts."""

from lit_pretrain.model.config import ModelConfig, available_models
from lit_pretrain.model.flops import num_parameters, training_flops_per_token
from lit_pretrain.model.gpt import GPT

__all__ = ["GPT", "ModelConfig", "available_models", "num_parameters", "training_flops_per_token"]
