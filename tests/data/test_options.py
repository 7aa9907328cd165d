"""`dataclass_from_dict`: the one rule by which option dataclasses are built from YAML mappings."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

import pytest

from lit_pretrain.data.dedup import DedupConfig
from lit_pretrain.data.filters import FilterConfig
from lit_pretrain.data.options import dataclass_from_dict
from lit_pretrain.data.prepare import PrepareOptions


@dataclass
class Example:
    size: int = 1
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"example size must be non-negative, got {self.size}")


def test_known_keys_make_the_dataclass():
    assert dataclass_from_dict(Example, {"size": 3, "names": ["a"]}, "example") == Example(3, ["a"])
    assert dataclass_from_dict(Example, {}, "example") == Example()
    assert dataclass_from_dict(Example, MappingProxyType({"size": 2}), "example") == Example(2)


def test_an_unknown_key_is_named_with_the_valid_ones():
    with pytest.raises(ValueError, match=r"^unknown example option 'sise'; valid options are: size, names$"):
        dataclass_from_dict(Example, {"sise": 3}, "example")


def test_every_unknown_key_is_named():
    with pytest.raises(ValueError, match=r"^unknown example options 'sise', 'nmes'; valid options are: size"):
        dataclass_from_dict(Example, {"sise": 3, "size": 1, "nmes": []}, "example")


def test_a_non_mapping_is_refused():
    with pytest.raises(ValueError, match=r"^example options must be a mapping of option to value, got \[1\]"):
        dataclass_from_dict(Example, [1], "example")  # type: ignore[arg-type]


def test_invalid_values_are_left_to_the_dataclass():
    with pytest.raises(ValueError, match="example size must be non-negative, got -1"):
        dataclass_from_dict(Example, {"size": -1}, "example")


@pytest.mark.parametrize(
    ("cls", "what", "bad_key"),
    [
        (FilterConfig, "filter", "max_char"),
        (DedupConfig, "dedup", "threshold"),
        (PrepareOptions, "prepare", "vocab"),
    ],
)
def test_the_option_dataclasses_share_the_rule(cls, what: str, bad_key: str):
    with pytest.raises(ValueError, match=rf"^unknown {what} option '{bad_key}'; valid options are: "):
        dataclass_from_dict(cls, {bad_key: 1}, what)
    if hasattr(cls, "from_dict"):
        with pytest.raises(ValueError, match=rf"^unknown {what} option '{bad_key}'"):
            cls.from_dict({bad_key: 1})


def test_prepare_options_are_frozen_and_checked():
    options = PrepareOptions(vocab_size=300, filters=FilterConfig(max_chars=5))
    assert options.filters.max_chars == 5 and options.dedup == DedupConfig()
    with pytest.raises(AttributeError):
        options.vocab_size = 10  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\), got 1.0"):
        PrepareOptions(val_fraction=1.0)
