"""Hugging Face `transformers` interop: this project's `GPT` as `LlamaForCausalLM` or `GPT2LMHeadModel`, and back.

The two families map onto the model's config like this (anything else is refused, naming the field):
- Llama: RMSNorm, RoPE (half-split, as Hugging Face's `rotate_half`), SwiGLU, grouped-query attention,
  tied or untied embeddings, biases on all linear layers or none.
- GPT-2: LayerNorm, learned positions, GELU (tanh approximation), one K/V head per query head. Hugging Face's
  GPT-2 always has biases: a model trained without them exports zero biases, which compute the same.
Weights are renamed (and, for GPT-2, fused and transposed into its Conv1D layout); nothing is recomputed.

Of the modded-nanogpt switches, qk_norm, logit_softcap and mlp='relu2' change the computation and neither
class has them: refused. zero_init_proj (an initialisation) and document_mask / document_positions (how
packed training windows are read) export as the plain architecture: like this model's KV-cache decoding,
the exported model treats its input as one document, on which it computes exactly what ours does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lit_pretrain.model import ModelConfig

# Fields of ModelConfig that each family fixes; a config with another value cannot be expressed.
LLAMA_FIXED = {"norm": "rmsnorm", "position": "rope", "mlp": "swiglu"}
GPT2_FIXED = {"norm": "layernorm", "position": "learned", "mlp": "gelu"}
ARCHITECTURES = {"LlamaForCausalLM": "llama", "GPT2LMHeadModel": "gpt2"}
# Fields whose non-default values neither class can compute: field -> (exportable value, what it does).
NOT_EXPRESSIBLE = {
    "qk_norm": (False, "normalises q and k per head"),
    "logit_softcap": (None, "soft-caps the logits"),
}


def family(config: ModelConfig) -> str:
    """'llama' or 'gpt2': the Hugging Face class that can express `config`; raises naming the field if none."""
    for field, (plain, what) in NOT_EXPRESSIBLE.items():
        if getattr(config, field) != plain:
            raise ValueError(
                f"{field}={getattr(config, field)!r} cannot be exported: it {what}, which neither "
                f"LlamaForCausalLM nor GPT2LMHeadModel does (only {field}={plain!r} exports)"
            )
    for name, fixed in (("llama", LLAMA_FIXED), ("gpt2", GPT2_FIXED)):
        if all(getattr(config, field) == value for field, value in fixed.items()):
            if name == "gpt2" and config.n_kv_head != config.n_head:
                raise ValueError(
                    f"n_kv_head {config.n_kv_head} != n_head {config.n_head}: GPT-2 in transformers has no "
                    "grouped-query attention (export a Llama-style model for that)"
                )
            return name
    fields = ", ".join(f"{field}={getattr(config, field)!r}" for field in LLAMA_FIXED)
    raise ValueError(
        f"no transformers class expresses {fields}: Llama needs "
        + ", ".join(f"{f}={v!r}" for f, v in LLAMA_FIXED.items())
        + "; GPT-2 needs "
        + ", ".join(f"{f}={v!r}" for f, v in GPT2_FIXED.items())
    )


def to_hf_config(config: ModelConfig, eos_id: int | None = None, bos_id: int | None = None) -> Any:
    """The `transformers` config (LlamaConfig or GPT2Config) of `config`."""
    from transformers import GPT2Config, LlamaConfig

    common = dict(vocab_size=config.vocab_size, bos_token_id=bos_id, eos_token_id=eos_id)
    common["tie_word_embeddings"] = config.tie_embeddings
    if family(config) == "llama":
        return LlamaConfig(
            **common,
            hidden_size=config.n_embd,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.n_layer,
            num_attention_heads=config.n_head,
            num_key_value_heads=config.n_kv_head,
            head_dim=config.head_size,
            max_position_embeddings=config.block_size,
            rms_norm_eps=config.norm_eps,
            rope_theta=config.rope_base,
            hidden_act="silu",
            attention_bias=config.bias,
            mlp_bias=config.bias,
            attention_dropout=0.0,
            initializer_range=config.init_std,
            architectures=["LlamaForCausalLM"],
        )
    return GPT2Config(
        **common,
        n_embd=config.n_embd,
        n_inner=config.intermediate_size,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_positions=config.block_size,
        layer_norm_epsilon=config.norm_eps,
        activation_function="gelu_pytorch_tanh",  # F.gelu(approximate="tanh"), as model/gpt.py
        resid_pdrop=config.dropout,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        initializer_range=config.init_std,
        architectures=["GPT2LMHeadModel"],
    )


def from_hf_config(hf_config: dict[str, Any], source: str) -> ModelConfig:
    """The `ModelConfig` of a Hugging Face config.json (Llama or GPT-2); refuses what GPT cannot run."""
    architectures = hf_config.get("architectures") or [hf_config.get("model_type", "?")]
    kind = ARCHITECTURES.get(architectures[0]) or {"llama": "llama", "gpt2": "gpt2"}.get(
        hf_config.get("model_type")
    )
    if kind is None:
        raise ValueError(
            f"{source}: architecture {architectures[0]!r} is not supported (only LlamaForCausalLM and "
            "GPT2LMHeadModel map onto this project's model)"
        )
    tied = bool(hf_config.get("tie_word_embeddings", True))
    if kind == "llama":
        _refuse_unsupported(hf_config, source, hidden_act="silu", pretraining_tp=1)
        rope = hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ValueError(
                f"{source}: rope scaling {rope.get('rope_type', rope.get('type'))!r} is not supported"
            )
        heads = hf_config["num_attention_heads"]
        head_dim = hf_config.get("head_dim") or hf_config["hidden_size"] // heads
        if head_dim * heads != hf_config["hidden_size"]:
            raise ValueError(
                f"{source}: head_dim {head_dim} x {heads} heads != hidden_size {hf_config['hidden_size']}"
            )
        if bool(hf_config.get("attention_bias", False)) != bool(hf_config.get("mlp_bias", False)):
            raise ValueError(
                f"{source}: attention_bias and mlp_bias differ; this model has one `bias` for both"
            )
        return ModelConfig(
            name=f"hf:{Path(source).name}",
            vocab_size=hf_config["vocab_size"],
            block_size=hf_config["max_position_embeddings"],
            n_layer=hf_config["num_hidden_layers"],
            n_head=heads,
            n_kv_head=hf_config.get("num_key_value_heads") or heads,
            n_embd=hf_config["hidden_size"],
            intermediate_size=hf_config["intermediate_size"],
            norm_eps=hf_config.get("rms_norm_eps", 1e-6),
            rope_base=float(rope.get("rope_theta", hf_config.get("rope_theta", 10000.0))),
            bias=bool(hf_config.get("attention_bias", False)),
            tie_embeddings=tied,
            init_std=hf_config.get("initializer_range", 0.02),
            **LLAMA_FIXED,
        )
    _refuse_unsupported(
        hf_config,
        source,
        activation_function="gelu_pytorch_tanh",
        scale_attn_weights=True,
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
        allowed={"activation_function": ("gelu_pytorch_tanh", "gelu_new")},
    )
    return ModelConfig(
        name=f"hf:{Path(source).name}",
        vocab_size=hf_config["vocab_size"],
        block_size=hf_config["n_positions"],
        n_layer=hf_config["n_layer"],
        n_head=hf_config["n_head"],
        n_embd=hf_config["n_embd"],
        intermediate_size=hf_config.get("n_inner") or 4 * hf_config["n_embd"],
        norm_eps=hf_config.get("layer_norm_epsilon", 1e-5),
        bias=True,
        tie_embeddings=tied,
        init_std=hf_config.get("initializer_range", 0.02),
        dropout=hf_config.get("resid_pdrop", 0.0),
        **GPT2_FIXED,
    )


def _refuse_unsupported(
    hf_config: dict[str, Any], source: str, allowed: dict[str, tuple] | None = None, **expected: Any
) -> None:
    for key, value in expected.items():
        accepted = (allowed or {}).get(key, (value,))
        if key in hf_config and hf_config[key] not in accepted:
            raise ValueError(
                f"{source}: {key}={hf_config[key]!r} is not supported (only {', '.join(map(repr, accepted))})"
            )


def _llama_names(config: ModelConfig) -> dict[str, str]:
    """Ours -> Hugging Face Llama parameter names."""
    names = {"wte.weight": "model.embed_tokens.weight", "norm_f.weight": "model.norm.weight"}
    if not config.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    kinds = ["weight", "bias"] if config.bias else ["weight"]
    for i in range(config.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        names[ours + "norm_1.weight"] = theirs + "input_layernorm.weight"
        names[ours + "norm_2.weight"] = theirs + "post_attention_layernorm.weight"
        for kind in kinds:
            for a, b in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("proj", "o_proj")):
                names[f"{ours}attn.{a}.{kind}"] = f"{theirs}self_attn.{b}.{kind}"
            for a, b in (("gate", "gate_proj"), ("up", "up_proj"), ("proj", "down_proj")):
                names[f"{ours}mlp.{a}.{kind}"] = f"{theirs}mlp.{b}.{kind}"
    return names


def to_hf_state_dict(config: ModelConfig, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our `GPT.state_dict()` tensors under Hugging Face's names and layout (tied head left out)."""
    if family(config) == "llama":
        return {theirs: weights[ours] for ours, theirs in _llama_names(config).items()}
    return _to_gpt2(config, weights)


def from_hf_state_dict(config: ModelConfig, hf_weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face tensors under our `GPT.state_dict()` names (the tied head shares the embedding)."""
    if family(config) == "llama":
        weights = {ours: hf_weights[theirs] for ours, theirs in _llama_names(config).items()}
    else:
        weights = _from_gpt2(config, hf_weights)
    if config.tie_embeddings:
        weights["lm_head.weight"] = weights["wte.weight"]
    return weights


def _gpt2_linear(prefix: str, weight: torch.Tensor, bias: torch.Tensor | None) -> dict[str, torch.Tensor]:
    # Conv1D stores [in, out]: the transpose of nn.Linear's [out, in]. A model without biases exports zeros.
    return {
        f"{prefix}.weight": weight.t().contiguous(),
        f"{prefix}.bias": bias if bias is not None else weight.new_zeros(weight.shape[0]),
    }


def _to_gpt2(config: ModelConfig, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    def bias(name: str, size: int, like: torch.Tensor) -> torch.Tensor:
        return weights[name] if name in weights else like.new_zeros(size)

    out = {"transformer.wte.weight": weights["wte.weight"], "transformer.wpe.weight": weights["wpe.weight"]}
    width = config.n_embd
    for i in range(config.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for a, b in (("norm_1", "ln_1"), ("norm_2", "ln_2")):
            weight = weights[f"{ours}{a}.weight"]
            out[f"{theirs}{b}.weight"] = weight
            out[f"{theirs}{b}.bias"] = bias(f"{ours}{a}.bias", width, weight)
        qkv = torch.cat([weights[f"{ours}attn.{p}.weight"] for p in "qkv"])
        qkv_bias = torch.cat([bias(f"{ours}attn.{p}.bias", width, qkv) for p in "qkv"])
        out |= _gpt2_linear(theirs + "attn.c_attn", qkv, qkv_bias)
        for a, b in (("attn.proj", "attn.c_proj"), ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            weight = weights[f"{ours}{a}.weight"]
            out |= _gpt2_linear(theirs + b, weight, weights.get(f"{ours}{a}.bias"))
    weight = weights["norm_f.weight"]
    out["transformer.ln_f.weight"] = weight
    out["transformer.ln_f.bias"] = bias("norm_f.bias", width, weight)
    if not config.tie_embeddings:
        out["lm_head.weight"] = weights["lm_head.weight"]
    return out


def _from_gpt2(config: ModelConfig, hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    weights = {"wte.weight": hf["transformer.wte.weight"], "wpe.weight": hf["transformer.wpe.weight"]}
    for i in range(config.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for a, b in (("norm_1", "ln_1"), ("norm_2", "ln_2")):
            weights[f"{ours}{a}.weight"], weights[f"{ours}{a}.bias"] = (
                hf[f"{theirs}{b}.weight"],
                hf[f"{theirs}{b}.bias"],
            )
        qkv, qkv_bias = hf[theirs + "attn.c_attn.weight"].t(), hf[theirs + "attn.c_attn.bias"]
        for part, weight, bias in zip("qkv", qkv.chunk(3), qkv_bias.chunk(3), strict=True):
            weights[f"{ours}attn.{part}.weight"], weights[f"{ours}attn.{part}.bias"] = (
                weight.contiguous(),
                bias,
            )
        for a, b in (("attn.proj", "attn.c_proj"), ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            weights[f"{ours}{a}.weight"] = hf[f"{theirs}{b}.weight"].t().contiguous()
            weights[f"{ours}{a}.bias"] = hf[f"{theirs}{b}.bias"]
    weights["norm_f.weight"], weights["norm_f.bias"] = (
        hf["transformer.ln_f.weight"],
        hf["transformer.ln_f.bias"],
    )
    if not config.tie_embeddings:
        weights["lm_head.weight"] = hf["lm_head.weight"]
    return weights


def is_hf_directory(path: str | Path) -> bool:
    """Whether `path` is a directory holding a Hugging Face config.json (not a sharded lit-pretrain checkpoint)."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def read_hf_config(directory: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The ModelConfig and the raw config.json of a local Hugging Face model directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no Hugging Face model directory at {directory}")
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{directory} is not a Hugging Face model directory (no config.json)")
    hf_config = json.loads(config_file.read_text())
    return from_hf_config(hf_config, str(directory)), hf_config


def read_hf_model(
    directory: str | Path, allow_pickle: bool = False
) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """The ModelConfig, our-named weights (on the CPU) and the config.json of a local Hugging Face model.

    Weights are read from safetensors files only; a pickled `pytorch_model.bin` could run code when loaded
    and is refused unless `allow_pickle` (for a file you trust).
    """
    from safetensors.torch import load_file

    directory = Path(directory)
    config, hf_config = read_hf_config(directory)
    files = sorted(directory.glob("*.safetensors"))
    hf_weights: dict[str, torch.Tensor] = {}
    if files:
        for file in files:
            hf_weights |= load_file(file, device="cpu")
    else:
        pickled = sorted(directory.glob("pytorch_model*.bin"))
        if not pickled:
            raise ValueError(
                f"{directory}: no model.safetensors (or *.safetensors shards) to read weights from"
            )
        if not allow_pickle:
            raise ValueError(
                f"{directory} holds only pickled weights ({pickled[0].name}); unpickling can run code, so only "
                "safetensors are read. Convert it to safetensors, or allow pickles for a model you trust"
            )
        for file in pickled:
            hf_weights |= torch.load(file, map_location="cpu", weights_only=True)
    missing = [key for key in to_hf_state_dict(config, _placeholders(config)) if key not in hf_weights]
    if missing:
        raise ValueError(
            f"{directory}: the weights lack {len(missing)} tensors the config needs, e.g. {missing[0]}"
        )
    return config, from_hf_state_dict(config, hf_weights), hf_config


def _placeholders(config: ModelConfig) -> dict[str, torch.Tensor]:
    """Meta tensors with the model's names and shapes (for the key lists of the mappings)."""
    from lit_pretrain.model import GPT

    with torch.device("meta"):
        return dict(GPT(config).state_dict())
