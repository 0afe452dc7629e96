"""A residual stream inside a Hugging Face model: patch, fine-tune, generate, save, load.

Run: python examples/hf_stream.py --stream value-learned --steps 60   (needs attnstreams[hf])
A tiny random Llama is built here (no download; with a real checkpoint, use
AutoModelForCausalLM.from_pretrained(path) instead). The stream starts at zero weight, so the
patched model computes what it did; a short fine-tune on a copy task moves the weight.
"""

import argparse
import tempfile

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from attnstreams.models.hf import add_streams, from_pretrained, stream_state


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", default="value-learned", help="a learned stream name")
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    torch.manual_seed(0)
    vocab, half = 32, 8
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    seq = torch.randint(vocab, (4, 2 * half))
    before = model(seq).logits
    add_streams(model, args.stream)  # forward hooks on each layer's projection
    same = torch.equal(model(seq).logits, before)
    print(f"patched with {args.stream}: logits unchanged {same}")

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(1, args.steps + 1):  # a plain loop; the HF Trainer works the same way
        first = torch.randint(vocab, (32, half))
        batch = torch.cat([first, first], 1)
        labels = batch.clone()
        labels[:, :half] = -100  # score the copy only
        loss = model(batch, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == args.steps:
            print(f"step {step}: copy loss {loss.item():.3f}")
    weights = [round(float(w.flatten()[-1]), 3) for w in stream_state(model).values()]
    print(f"weight on the handed-on projection, layers 2-3: {weights}")

    model.eval()
    prompt = torch.cat([seq[:1, :half], seq[:1, :1]], 1)
    out = model.generate(prompt, max_new_tokens=half - 1, do_sample=False, pad_token_id=0)
    print(f"copied {int((out[0, half:] == seq[0, :half]).sum())} of {half} tokens")
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        back = from_pretrained(d).eval()  # transformers' loader, then the stream put back
        same = torch.equal(back(prompt).logits, model(prompt).logits)
        print(f"saved and loaded: logits equal {same}")


if __name__ == "__main__":
    main()
