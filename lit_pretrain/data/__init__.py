"""Corpus assembly (sources, tokenizer, shards) and the streaming DataModule."""
