"""`fit` under torchrun: the warning about restarts over torchrun's shared store."""

from __future__ import annotations

from lit_pretrain.cli.fit import warn_if_torchrun_restarts_share_its_store


def test_restarts_over_the_shared_store_are_warned_about():
    shared = {"TORCHELASTIC_MAX_RESTARTS": "1", "TORCHELASTIC_USE_AGENT_STORE": "True"}
    assert warn_if_torchrun_restarts_share_its_store(shared)
    assert not warn_if_torchrun_restarts_share_its_store({**shared, "TORCHELASTIC_MAX_RESTARTS": "0"})
    assert not warn_if_torchrun_restarts_share_its_store({**shared, "TORCHELASTIC_USE_AGENT_STORE": "False"})
    assert not warn_if_torchrun_restarts_share_its_store({}), "not under torchrun"
