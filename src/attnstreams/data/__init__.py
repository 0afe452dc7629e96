"""Corpora, tokenizers and token shards for the language-model experiments."""
