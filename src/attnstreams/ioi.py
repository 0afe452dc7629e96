"""Indirect-object identification (IOI) and in-context metrics for a causal LM.

IOI: "When Mary and John went to the store, John gave a drink to" -> " Mary" (the indirect
object, IO) rather than " John" (the repeated subject, S). Every name is scored by the
log-probability of its whole token sequence, so multi-token names are handled; for single-token
names the log-probability difference IO - S equals the logit difference of the IOI literature.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# [A] is the indirect object (IO); [B] the subject (S), named twice. ABBA and BABA orders are
# made by swapping who is named first in the opening clause.
TEMPLATES = (
    "When [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to",
    "After [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [A] and [B] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "While [A] and [B] were working at the [PLACE], [B] gave a [OBJECT] to",
    "Then, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [A] and [B] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [A] and [B] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [A] and [B] were thinking about going to the [PLACE]. [B] wanted to give a [OBJECT] to",
    "Then, [A] and [B] had a long argument, and afterwards [B] said to",
    "After [A] and [B] went to the [PLACE], [B] handed a [OBJECT] to",
    "When [A] and [B] arrived at the [PLACE], [B] showed a [OBJECT] to",
    "Friends [A] and [B] found a [OBJECT] at the [PLACE]. [B] gave it to",
    "The [PLACE] was quiet when [A] and [B] came in. [B] passed a [OBJECT] to",
    "[A] and [B] went to the [PLACE] together. Later, [B] gave a [OBJECT] to",
    "Yesterday [A] and [B] played at the [PLACE], and [B] threw a [OBJECT] to",
    "When [A] and [B] sat down at the [PLACE], [B] offered a [OBJECT] to",
)
PLACES = (
    "store",
    "park",
    "school",
    "garden",
    "beach",
    "shop",
    "farm",
    "library",
    "zoo",
    "lake",
    "house",
    "market",
    "forest",
    "river",
    "hospital",
    "station",
)
OBJECTS = (
    "ball",
    "drink",
    "book",
    "kite",
    "cake",
    "flower",
    "toy",
    "hat",
    "box",
    "cookie",
    "letter",
    "ring",
    "bone",
    "snack",
    "pen",
    "card",
)
# The paper's prompts (paper.md section 4): each pair with both repeated names.
PAPER_PROMPTS = (
    ("After John and Mary went to the store, [S] gave a bottle of milk to", "John", "Mary"),
    ("When Tom and James went to the park, [S] gave the ball to", "Tom", "James"),
    ("When Dan and Emily went to the shops, [S] gave an apple to", "Dan", "Emily"),
    ("After Sam and Amy went to the park, [S] gave a drink to", "Sam", "Amy"),
)
CANDIDATE_NAMES = (
    "Mary",
    "John",
    "Tom",
    "James",
    "Dan",
    "Emily",
    "Sam",
    "Amy",
    "Lily",
    "Ben",
    "Anna",
    "Max",
    "Mia",
    "Leo",
    "Zoe",
    "Jack",
    "Lucy",
    "Tim",
    "Sara",
    "Bob",
    "Kate",
    "Jim",
    "Ella",
    "Noah",
    "Emma",
    "Liam",
    "Ava",
    "Ethan",
    "Grace",
    "Jake",
    "Lisa",
    "Mark",
    "Paul",
    "Rose",
    "Ryan",
    "Sue",
    "Alex",
    "Amy",
    "Beth",
    "Carl",
    "Dave",
    "Eve",
    "Fred",
    "Gary",
    "Hank",
    "Ivy",
    "Jane",
    "Joe",
    "Kim",
    "Lara",
    "Luke",
    "Matt",
    "Nick",
    "Olivia",
    "Pete",
    "Rita",
    "Ruby",
    "Sophie",
    "Steve",
    "Tina",
    "Tony",
    "Will",
    "Adam",
    "Chloe",
    "Daisy",
    "Finn",
    "Hannah",
    "Henry",
    "Jenny",
    "Kevin",
    "Laura",
    "Molly",
    "Nina",
    "Oscar",
    "Sally",
    "Susan",
    "Bella",
    "Charlie",
)


def template_regex(template: str) -> re.Pattern:
    """A regex matching any filled-in instance of a template (names: capitalised words)."""
    parts = re.split(r"(\[A\]|\[B\]|\[PLACE\]|\[OBJECT\])", template)
    fill = {"[A]": r"[A-Z][a-z]+", "[B]": r"[A-Z][a-z]+", "[PLACE]": r"\w+", "[OBJECT]": r"\w+"}
    return re.compile("".join(fill.get(p, re.escape(p)) for p in parts))


@dataclass(frozen=True)
class IOIPrompt:
    text: str
    io: str  # the right answer
    s: str  # the repeated subject
    order: str  # ABBA or BABA


def single_token_names(tokenizer, names=CANDIDATE_NAMES) -> list[str]:
    """Names that are one token with a leading space under this tokenizer."""
    seen, out = set(), []
    for n in names:
        if n not in seen and len(tokenizer.encode(" " + n)) == 1:
            seen.add(n)
            out.append(n)
    return out


def make_ioi_set(names: list[str], n: int = 600, seed: int = 0) -> list[IOIPrompt]:
    """n prompts over all templates, half ABBA and half BABA, names drawn without repeats."""
    if len(names) < 2:
        raise ValueError("IOI needs at least 2 names")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        template = TEMPLATES[i % len(TEMPLATES)]
        io, s = rng.sample(names, 2)
        order = "ABBA" if i % 2 == 0 else "BABA"
        first, second = (io, s) if order == "ABBA" else (s, io)
        text = (
            template.replace("[A] and [B]", f"{first} and {second}")
            .replace("[B]", s)
            .replace("[PLACE]", rng.choice(PLACES))
            .replace("[OBJECT]", rng.choice(OBJECTS))
        )
        out.append(IOIPrompt(text, io, s, order))
    return out


def paper_prompts() -> list[IOIPrompt]:
    out = []
    for text, a, b in PAPER_PROMPTS:
        out.append(IOIPrompt(text.replace("[S]", a), b, a, "ABBA"))
        out.append(IOIPrompt(text.replace("[S]", b), a, b, "BABA"))
    return out


@torch.no_grad()
def continuation_logprobs(model, tokenizer, pairs: list[tuple[str, str]], device, batch: int = 64):
    """log P(continuation | prompt) summed over the continuation's tokens, for each pair."""
    limit = getattr(getattr(model, "cfg", None), "block_size", None)
    seqs = []
    for prompt, cont in pairs:
        p, c = tokenizer.encode(prompt), tokenizer.encode(cont)
        if limit is not None and len(p) + len(c) > limit:  # keep the end of a long prompt
            p = p[len(p) + len(c) - limit :]
        seqs.append((p + c, len(p), len(c)))
    out = []
    for i in range(0, len(seqs), batch):
        chunk = seqs[i : i + batch]
        T = max(len(s) for s, _, _ in chunk)
        ids = torch.full((len(chunk), T), tokenizer.eot_id, dtype=torch.long)
        for j, (s, _, _) in enumerate(chunk):
            ids[j, : len(s)] = torch.tensor(s)
        logits, _ = model(ids.to(device))
        logp = F.log_softmax(logits.float(), dim=-1).cpu()
        for j, (s, np_, nc) in enumerate(chunk):
            pos = torch.arange(np_ - 1, np_ - 1 + nc)
            out.append(float(logp[j, pos, torch.tensor(s[np_ : np_ + nc])].sum()))
    return out


def ioi_metrics(model, tokenizer, prompts: list[IOIPrompt], device) -> dict:
    """accuracy (IO more likely than S), mean log-prob difference IO - S, mean P(IO), P(S)."""
    was_training = model.training
    model.eval()
    try:
        pairs = [(p.text, " " + p.io) for p in prompts] + [(p.text, " " + p.s) for p in prompts]
        lp = continuation_logprobs(model, tokenizer, pairs, device)
    finally:
        model.train(was_training)
    n = len(prompts)
    io, s = torch.tensor(lp[:n]), torch.tensor(lp[n:])
    return {
        "accuracy": float((io > s).float().mean()),
        "logit_diff": float((io - s).mean()),
        "p_io": float(io.exp().mean()),
        "p_s": float(s.exp().mean()),
        "n": n,
    }


@torch.no_grad()
def induction_metrics(
    model, vocab_size: int, device, length: int = 50, batch: int = 32, seed: int = 0, low: int = 0
) -> dict:
    """Random token sequences repeated twice: loss and accuracy on the second copy (an
    induction head copies from the first) against the first copy's loss."""
    limit = getattr(getattr(model, "cfg", None), "block_size", None)
    if limit is not None:
        length = min(length, (limit + 1) // 2)
    was_training = model.training
    model.eval()
    try:
        g = torch.Generator().manual_seed(seed)
        seq = torch.randint(low, vocab_size, (batch, length), generator=g)
        ids = torch.cat([seq, seq], 1).to(device)
        logits, _ = model(ids[:, :-1])
        logp = F.log_softmax(logits.float(), -1)
        target = ids[:, 1:]
        nll = -logp.gather(-1, target[..., None])[..., 0]
        first, second = nll[:, : length - 1], nll[:, length - 1 :]
        acc = (logits[:, length - 1 :].argmax(-1) == target[:, length - 1 :]).float().mean()
    finally:
        model.train(was_training)
    return {
        "induction_loss": float(second.mean()),
        "first_copy_loss": float(first.mean()),
        "induction_accuracy": float(acc),
        "induction_score": float(first.mean() - second.mean()),
    }


def icl_score(per_position_loss: torch.Tensor) -> float:
    """In-context learning score (Olsson et al. 2022): loss late in the context minus loss
    early in it (negative: the model uses context). Early: positions around T/10; late: the
    last tenth."""
    T = per_position_loss.numel()
    e = max(1, T // 10)
    early = per_position_loss[max(0, e - e // 2) : e + e // 2 + 1].mean()
    late = per_position_loss[T - e :].mean()
    return float(late - early) if math.isfinite(float(late - early)) else float("nan")


def behaviour_metrics(model, tokenizer, device, ioi_set: list[IOIPrompt]) -> dict:
    """The metrics that need no corpus: IOI on the templated set (if any) and on the paper's
    prompts, and induction on repeated random tokens (ids from 256 up: past byte tokens)."""
    out = {}
    if ioi_set:
        out |= {f"ioi_{k}": v for k, v in ioi_metrics(model, tokenizer, ioi_set, device).items()}
    paper = ioi_metrics(model, tokenizer, paper_prompts(), device)
    out |= {f"paper_ioi_{k}": v for k, v in paper.items()}
    vocab = model.cfg.vocab_size
    return out | induction_metrics(model, vocab, device, low=min(256, vocab - 1))
