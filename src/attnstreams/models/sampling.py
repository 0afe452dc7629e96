"""Sampling from a causal language model: any model whose forward(ids) gives (logits, _) and
whose cfg.block_size is its context. GPT and the Hugging Face wrapper take it as `generate`."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """idx (B, T0) continued by max_new_tokens sampled tokens, for any causal LM whose
    forward(ids) gives (logits, _) and whose cfg.block_size is its context. A model with
    `new_cache` decodes with it until the context is full; after that (and for models without
    a cache) each token is predicted from the last block_size tokens: a sliding window."""
    T = model.cfg.block_size
    cache = model.new_cache() if hasattr(model, "new_cache") and idx.size(1) < T else None
    logits, _ = model(idx[:, -T:], cache=cache) if cache is not None else model(idx[:, -T:])
    out = idx
    for _ in range(max_new_tokens):
        last = logits[:, -1].float()
        if temperature == 0:
            nxt = last.argmax(-1, keepdim=True)
        else:
            last = last / temperature
            if top_k is not None:
                kth = torch.topk(last, min(top_k, last.size(-1))).values[:, -1:]
                last = last.masked_fill(last < kth, -math.inf)
            nxt = torch.multinomial(torch.softmax(last, -1), 1, generator=generator)
        out = torch.cat([out, nxt], dim=1)
        if cache is not None and out.size(1) <= T:
            logits, _ = model(nxt, cache=cache)
        else:  # past the context: slide the window
            cache = None
            logits, _ = model(out[:, -T:])
    return out
