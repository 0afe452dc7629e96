"""A small GPT on StreamAttention: how a layer hands its stream (the carry) to the next.

Run: python examples/stream_gpt.py --stream value-learned --steps 50
It learns to copy: sequences whose second half repeats the first, so attention has to look back.
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

from attnstreams.streams import StreamAttention


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, layer_idx: int, stream: str) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = StreamAttention(dim, heads, layer_idx, stream=stream)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x, carry):
        a, carry = self.attn(self.ln1(x), carry)  # takes the carry in, hands one on
        x = x + a
        return x + self.mlp(self.ln2(x)), carry


class StreamGPT(nn.Module):
    def __init__(self, vocab: int, dim: int, heads: int, layers: int, ctx: int, stream: str):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, dim), nn.Embedding(ctx, dim)
        self.blocks = nn.ModuleList(Block(dim, heads, i, stream) for i in range(layers))
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.size(1), device=idx.device))
        carry = None  # layer 0 receives nothing; every later layer gets the one before's
        for block in self.blocks:
            x, carry = block(x, carry)
        return self.head(x)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", default="value", help="none, value, value-first, value-learned...")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    vocab, half = 32, 8
    model = StreamGPT(vocab, dim=64, heads=4, layers=3, ctx=2 * half, stream=args.stream)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(1, args.steps + 1):
        first = torch.randint(vocab, (32, half))
        seq = torch.cat([first, first], 1)
        logits = model(seq[:, :-1])
        loss = F.cross_entropy(logits[:, half - 1 :].reshape(-1, vocab), seq[:, half:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps:
            chance = torch.log(torch.tensor(float(vocab)))
            print(f"step {step}: copy loss {loss.item():.3f} (chance {chance:.3f})")


if __name__ == "__main__":
    main()
