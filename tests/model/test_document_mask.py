"""Document masking of packed windows: attention never crosses an EOS boundary; positions may restart."""

from __future__ import annotations

import pytest
import torch

from lit_pretrain.model import GPT, ModelConfig
from lit_pretrain.model.gpt import document_causal_mask, document_ids, positions_in_documents

EOS = 0


def build(name: str, seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig.from_name(name, init_std=0.2, **overrides)).eval()


def documents(lengths: list[int], vocab_size: int, seed: int = 0) -> list[torch.Tensor]:
    """Random documents of the given lengths (EOS included), each ended by EOS and holding no other."""
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.cat([torch.randint(1, vocab_size, (n - 1,), generator=generator), torch.tensor([EOS])])
        for n in lengths
    ]


def test_document_ids_count_the_eos_tokens_strictly_before():
    idx = torch.tensor([[5, EOS, 7, 8, EOS, EOS, 3], [EOS, 1, 2, 3, 4, 5, 6]])
    assert document_ids(idx, EOS).tolist() == [[0, 0, 1, 1, 1, 2, 3], [0, 1, 1, 1, 1, 1, 1]]
    assert positions_in_documents(document_ids(idx, EOS)).tolist() == [
        [0, 1, 0, 1, 2, 0, 0],
        [0, 0, 1, 2, 3, 4, 5],
    ]
    mask = document_causal_mask(document_ids(idx, EOS))
    assert mask.shape == (2, 1, 7, 7) and mask.dtype == torch.bool
    assert mask[0, 0].int().tolist() == [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],  # the EOS sees its own document
        [0, 0, 1, 0, 0, 0, 0],  # the token after an EOS starts afresh
        [0, 0, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 1, 0],  # an empty document: the EOS alone
        [0, 0, 0, 0, 0, 0, 1],
    ]


@pytest.mark.parametrize("name", ["gpt2-debug", "llama-debug"])
@pytest.mark.parametrize("document_positions", [False, True])
def test_an_earlier_document_never_leaks_into_a_later_one(name, document_positions):
    masked = build(name, document_mask=True, eos_token_id=EOS, document_positions=document_positions)
    plain = build(name)
    vocab = masked.config.vocab_size
    first, second, third = documents([9, 14, 17], vocab)
    window = torch.cat([first, second, third])[None]
    boundary = first.numel()  # positions from here on belong to later documents
    with torch.no_grad():
        masked_logits, plain_logits = masked(window), plain(window)
        for position in (0, 4, boundary - 2):  # every token of the first document but its EOS
            changed = window.clone()
            changed[0, position] = 1 + (changed[0, position] % (vocab - 1))
            assert changed[0, position] != EOS
            after = masked(changed)
            assert torch.equal(after[:, boundary:], masked_logits[:, boundary:]), "leaked across a document"
            assert not torch.allclose(after[:, position:boundary], masked_logits[:, position:boundary])
            plain_after = plain(changed)
            assert not torch.allclose(
                plain_after[:, boundary:], plain_logits[:, boundary:], rtol=0, atol=1e-4
            )
        # The second document's tokens do not reach the third's either.
        changed = window.clone()
        changed[0, boundary + 3] = 1 + (changed[0, boundary + 3] % (vocab - 1))
        after = masked(changed)
        third_start = boundary + second.numel()
        assert torch.equal(after[:, third_start:], masked_logits[:, third_start:])
        assert torch.equal(after[:, :boundary], masked_logits[:, :boundary])


@pytest.mark.parametrize("name", ["gpt2-debug", "llama-debug"])
def test_document_positions_make_a_document_independent_of_its_offset(name):
    model = build(name, document_mask=True, eos_token_id=EOS, document_positions=True)
    vocab = model.config.vocab_size
    padding, document, rest = documents([11, 20, 7], vocab, seed=1)
    with torch.no_grad():
        alone = model(document[None])
        packed = model(torch.cat([padding, document, rest])[None])
        offset = padding.numel()
        torch.testing.assert_close(packed[:, offset : offset + document.numel()], alone, rtol=0, atol=1e-5)
        # Without restarting positions: learned positions see the offset; RoPE, being relative, does not
        # once the mask keeps the document to itself (document_positions then changes only rounding).
        unpositioned = build(name, document_mask=True, eos_token_id=EOS)
        window = torch.cat([padding, document, rest])[None]
        shifted = unpositioned(window)[:, offset : offset + document.numel()]
        relative = unpositioned.config.position == "rope"
        assert torch.allclose(shifted, unpositioned(document[None]), rtol=0, atol=1e-4) == relative


def test_rows_of_a_batch_are_masked_independently():
    model = build("llama-debug", document_mask=True, eos_token_id=EOS, document_positions=True)
    first, second = documents([10, 22], model.config.vocab_size, seed=2)
    other_row = torch.randint(1, model.config.vocab_size, (32,), generator=torch.Generator().manual_seed(3))
    batch = torch.stack([torch.cat([first, second]), other_row])  # the second row holds no EOS
    with torch.no_grad():
        logits = model(batch)
        torch.testing.assert_close(logits[0:1, 10:], model(second[None]), rtol=0, atol=1e-5)
        plain = build("llama-debug")
        torch.testing.assert_close(logits[1:], plain(other_row[None]), rtol=0, atol=1e-5)


def test_document_mask_trains():
    model = build("llama-debug", document_mask=True, eos_token_id=EOS, document_positions=True)
    window = torch.cat(documents([20, 13, 16], model.config.vocab_size))[None]
    logits = model.train()(window[:, :-1])
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), window[0, 1:]).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
