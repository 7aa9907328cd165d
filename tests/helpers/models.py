"""Model settings shared by tests."""

# A model small enough that a few training steps take seconds on one CPU core.
TEST_MODEL_OVERRIDES = {
    "vocab_size": 512,
    "n_layer": 2,
    "n_head": 4,
    "n_kv_head": 2,
    "n_embd": 64,
    "block_size": 64,
}
