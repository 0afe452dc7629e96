"""Indirect-object identification (IOI) and in-context metrics for a causal LM.

IOI: "When Mary and John went to the store, John gave a drink to" -> " Mary" (the indirect
object, IO) rather than " John" (the repeated subject, S). Every name is scored by the
log-probability of its whole token sequence, so multi-token names are handled; for single-token
names the log-probability difference IO - S equals the logit difference of the IOI literature.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from attnstreams.data.corpus import iter_texts
from attnstreams.models.stack import ModelStack
from attnstreams.run.config import ConfigError

if TYPE_CHECKING:
    from attnstreams.data.tokenizer import Tokenizer

Models = torch.nn.Module  # one model, or a ModelStack of many evaluated at once


def model_logits(model: Models, ids: torch.Tensor) -> torch.Tensor:
    """(models, B, T, vocab): a ModelStack's models all on the same `ids` in one batched
    computation, or one model as a stack of one. Every metric below takes either and gives
    one dict a model (a stack) or the dict (one model)."""
    return model.each(ids) if isinstance(model, ModelStack) else model(ids)[0][None]


def _cfg(model: Models):
    """The (first) model's config, if it has one."""
    return getattr(model.models[0] if isinstance(model, ModelStack) else model, "cfg", None)


def _size(model: Models) -> int:
    """How many models: a stack's size, else 1."""
    return model.size if isinstance(model, ModelStack) else 1


def stack_rows(model: Models, rows: int) -> int:
    """Rows a forward for `rows` rows of one model: a stack of N takes 1/N of them at a time,
    so its logits need no more memory than one model's."""
    return max(1, rows // _size(model))


def _one_or_all(model: Models, outs: list):
    """A stack's list of per-model results, or one model's result."""
    return outs if isinstance(model, ModelStack) else outs[0]


def per_model(model: Models, got) -> list:
    """A metric's result as a list, one entry a model (one model: a list of one)."""
    return got if isinstance(model, ModelStack) else [got]


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
    """One IOI prompt and the two names scored after it."""

    text: str
    io: str  # the right answer
    s: str  # the repeated subject
    order: str  # ABBA (the IO is named first) or BABA
    template: int = -1  # index into TEMPLATES (PAPER_PROMPTS for the paper's prompts)


def single_token_names(
    tokenizer: Tokenizer, names: tuple[str, ...] | list[str] = CANDIDATE_NAMES
) -> list[str]:
    """Names that are one token with a leading space under this tokenizer."""
    seen, out = set(), []
    for n in names:
        if n not in seen and len(tokenizer.encode(" " + n)) == 1:
            seen.add(n)
            out.append(n)
    return out


IOI_ROUND = 4 * len(TEMPLATES)  # prompts a round: every template, each name the IO, both orders


def make_ioi_set(
    names: list[str],
    n: int = 600,
    seed: int = 0,
    places: tuple[str, ...] | list[str] = PLACES,
    objects: tuple[str, ...] | list[str] = OBJECTS,
) -> list[IOIPrompt]:
    """About n prompts (rounded up to whole rounds of 4 x templates). Every round fills every
    template once with two fresh names X, Y, a place and an object, and writes it four ways:
    X or Y as the IO, each in both orders (ABBA: the IO is named first; BABA: the S is). So
    templates and orders are balanced, and a model that ignores the context (any fixed
    preference between two names) scores exactly 0.5 accuracy and 0 mean difference.
    `IOIPrompt.template` is the template's index."""
    if len(names) < 2:
        raise ValueError("IOI needs at least 2 names")
    rng = random.Random(seed)
    out = []
    rounds = -(-n // IOI_ROUND)
    for _ in range(rounds):
        for t, template in enumerate(TEMPLATES):
            x, y = rng.sample(list(names), 2)
            place, obj = rng.choice(list(places)), rng.choice(list(objects))
            for io, s in ((x, y), (y, x)):
                for order, (first, second) in (("ABBA", (io, s)), ("BABA", (s, io))):
                    text = (
                        template.replace("[A] and [B]", f"{first} and {second}")
                        .replace("[B]", s)
                        .replace("[PLACE]", place)
                        .replace("[OBJECT]", obj)
                    )
                    out.append(IOIPrompt(text, io, s, order, t))
    return out


def paper_prompts() -> list[IOIPrompt]:
    """The paper's 8 prompts. "After John and Mary ..., John gave ... to" repeats the name
    said first, so the IO (Mary) is named second: BABA; repeating Mary is ABBA."""
    out = []
    for t, (text, a, b) in enumerate(PAPER_PROMPTS):
        out.append(IOIPrompt(text.replace("[S]", a), b, a, "BABA", t))
        out.append(IOIPrompt(text.replace("[S]", b), a, b, "ABBA", t))
    return out


@functools.lru_cache(maxsize=8)
def _scoring_batches(
    tokenizer: Tokenizer, pairs: tuple[tuple[str, str], ...], limit: int | None, batch: int
) -> tuple[tuple[torch.Tensor, ...], ...]:
    """(ids, rows, cols, targets) a batch: the pairs tokenised once, not at every evaluation
    (a run scores the same prompts dozens of times)."""
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
        rows, cols, targets = [], [], []  # each continuation token: its sequence, position, id
        for j, (s, np_, nc) in enumerate(chunk):
            ids[j, : len(s)] = torch.tensor(s)
            rows += [j] * nc
            cols += range(np_ - 1, np_ - 1 + nc)
            targets += s[np_ : np_ + nc]
        out.append((ids, torch.tensor(rows), torch.tensor(cols), torch.tensor(targets)))
    return tuple(out)


@torch.no_grad()
def continuation_logprobs(
    model: Models,
    tokenizer: Tokenizer,
    pairs: list[tuple[str, str]],
    device: str | torch.device,
    batch: int = 256,
) -> list:
    """log P(continuation | prompt) summed over the continuation's tokens, for each pair (a
    stack: a list of them a model).

    Only the continuations' positions are normalised, on the device, and only the sums come
    back: a batch's whole (B, T, vocab) log-probabilities never cross to the host."""
    limit = getattr(_cfg(model), "block_size", None)
    sums = []
    for ids, rows, cols, targets in _scoring_batches(
        tokenizer, tuple(pairs), limit, stack_rows(model, batch)
    ):
        logits = model_logits(model, ids.to(device))  # (models, B, T, vocab)
        r = rows.to(logits.device)
        logp = logits[:, r, cols.to(r.device)].float().log_softmax(-1)
        want = targets.to(r.device).expand(len(logp), -1)
        got = logp.gather(-1, want[..., None])[..., 0]
        sums.append(torch.zeros(len(logp), len(ids), device=r.device).index_add_(1, r, got))
    if not sums:
        return _one_or_all(model, [[] for _ in range(_size(model))])
    return _one_or_all(model, torch.cat(sums, 1).tolist())


def ioi_metrics(
    model: Models,
    tokenizer: Tokenizer,
    prompts: list[IOIPrompt],
    device: str | torch.device,
    by_template: bool = False,
) -> dict | list[dict]:
    """accuracy (IO more likely than S), mean log-prob difference IO - S, mean P(IO), P(S);
    by_template: also [accuracy, difference] of every template, keyed by its index."""
    was_training = model.training
    model.eval()
    try:
        pairs = [(p.text, " " + p.io) for p in prompts] + [(p.text, " " + p.s) for p in prompts]
        lp = continuation_logprobs(model, tokenizer, pairs, device)
    finally:
        model.train(was_training)
    n, t = len(prompts), torch.tensor([p.template for p in prompts])
    outs = []
    for row in per_model(model, lp):
        io, s = torch.tensor(row[:n]), torch.tensor(row[n:])
        out = {
            "accuracy": float((io > s).float().mean()),
            "logit_diff": float((io - s).mean()),
            "p_io": float(io.exp().mean()),
            "p_s": float(s.exp().mean()),
            "n": n,
        }
        if by_template:
            out["by_template"] = {
                str(k): [
                    float((io[t == k] > s[t == k]).float().mean()),
                    float((io - s)[t == k].mean()),
                ]
                for k in sorted(set(t.tolist()))
            }
        outs.append(out)
    return _one_or_all(model, outs)


@torch.no_grad()
def induction_metrics(
    model: torch.nn.Module,
    vocab_size: int,
    device: str | torch.device,
    length: int = 50,
    batch: int = 32,
    seed: int = 0,
    low: int = 0,
) -> dict:
    """Random token sequences repeated twice (Olsson et al. 2022).

    induction_score: loss on the first copy minus loss on the second, the second's first token
    excluded (nothing in the context predicts it). prefix_matching: per head, the attention a
    token of the second copy pays to the token after its earlier occurrence; the best head's
    score and its name (L<layer>H<head>, from 0)."""
    from attnstreams.streams import StreamAttention

    limit = getattr(getattr(model, "cfg", None), "block_size", None)
    if limit is not None:
        length = min(length, (limit + 1) // 2)
    layers = [m for m in model.modules() if isinstance(m, StreamAttention)]
    was_training = model.training
    model.eval()
    try:
        for m in layers:
            m.keep_attention = True
        g = torch.Generator().manual_seed(seed)
        seq = torch.randint(low, vocab_size, (batch, length), generator=g)
        ids = torch.cat([seq, seq], 1).to(device)
        logits, _ = model(ids[:, :-1])
        logp = F.log_softmax(logits.float(), -1)
        target = ids[:, 1:]
        nll = -logp.gather(-1, target[..., None])[..., 0]
        first, second = nll[:, : length - 1], nll[:, length:]
        acc = (logits[:, length:].argmax(-1) == target[:, length:]).float().mean()
        q = torch.arange(length, 2 * length - 1, device=device)  # second-copy positions
        scores = [m.attn_probs[:, :, q, q - length + 1].mean(dim=(0, 2)) for m in layers]
    finally:
        for m in layers:
            m.keep_attention, m.attn_probs = False, None
        model.train(was_training)
    out = {
        "induction_loss": float(second.mean()),
        "first_copy_loss": float(first.mean()),
        "induction_accuracy": float(acc),
        "induction_score": float(first.mean() - second.mean()),
    }
    if scores:  # (layers, heads)
        s = torch.stack(scores)
        layer, head = divmod(int(s.argmax()), s.size(1))
        out |= {"prefix_matching": float(s.max()), "prefix_matching_head": f"L{layer}H{head}"}
    return out


@torch.no_grad()
def story_icl_metrics(
    model: Models, stories: torch.Tensor, early: int, late: int, eot_id: int
) -> dict | list[dict]:
    """In-context metrics within held-out stories (tokens counted from 0 at the story's start,
    the story preceded by end-of-text as in training); `stories`: (N, >= late + 1) ids.

    icl_score: the loss on token `late` minus that on token `early` (Olsson et al.'s score
    inside one story). Stories open with formulaic text, so their early tokens are easy; the
    score mixes that with the use of context. context_gain controls for it: the loss on the
    same token `late` given only its `early` preceding tokens, minus the loss given the whole
    story before it (positive: the model uses the longer context)."""
    was_training = model.training
    model.eval()
    step = stack_rows(model, 64)
    try:
        x = torch.cat([torch.full_like(stories[:, :1], eot_id), stories[:, :late]], 1)
        full, short = [], []
        for i in range(0, len(x), step):
            logp = F.log_softmax(model_logits(model, x[i : i + step]).float(), -1)
            y = stories[i : i + step, : late + 1].expand(len(logp), -1, -1)
            full.append(-logp.gather(-1, y[..., None])[..., 0])
            if early:  # the same token, seen with only its `early` preceding tokens
                window = stories[i : i + step, late - early : late]
                lp = F.log_softmax(model_logits(model, window)[:, :, -1].float(), -1)
                want = stories[i : i + step, late].expand(len(lp), -1)
                short.append(-lp.gather(-1, want[..., None])[..., 0])
        nll = torch.cat(full, 1)  # (models, stories, late + 1)
    finally:
        model.train(was_training)
    outs = []
    for j in range(len(nll)):
        e, lt = float(nll[j, :, early].mean()), float(nll[j, :, late].mean())
        out = {"icl_score": lt - e, "loss_early": e, "loss_late": lt, "icl_stories": len(x)}
        if short:
            out["context_gain"] = float(torch.cat(short, 1)[j].mean()) - lt
        outs.append(out)
    return _one_or_all(model, outs)


def behaviour_metrics(
    model: Models,
    tokenizer: Tokenizer,
    device: str | torch.device,
    ioi_set: list[IOIPrompt],
) -> dict | list[dict]:
    """The metrics that need no corpus: IOI on the templated set (if any; with every
    template's accuracy and difference) and on the paper's prompts, and induction on repeated
    random tokens (ids from 256 up: past byte tokens). A stack scores IOI at once; induction
    reads each model's attention, so it takes them one by one (one forward each)."""
    members = model.models if isinstance(model, ModelStack) else [model]
    outs = [{} for _ in members]
    if ioi_set:
        got = ioi_metrics(model, tokenizer, ioi_set, device, by_template=True)
        for out, g in zip(outs, per_model(model, got), strict=True):
            out |= {f"ioi_{k}": v for k, v in g.items()}
    paper = ioi_metrics(model, tokenizer, paper_prompts(), device)
    for out, g in zip(outs, per_model(model, paper), strict=True):
        out |= {f"paper_ioi_{k}": v for k, v in g.items()}
    vocab = _cfg(model).vocab_size
    for out, m in zip(outs, members, strict=True):
        out |= induction_metrics(m, vocab, device, low=min(256, vocab - 1))
    return _one_or_all(model, outs)


@torch.no_grad()
def heldout_loss(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    data: str,
    block_size: int,
    device: str | torch.device,
    max_tokens: int = 1_000_000,
    text_field: str = "text",
    split: str = "validation",
    separator: str = "eot",
) -> float:
    """Mean next-token loss on a corpus's validation split (`split="all"`: every document of
    a local file the user names as held out), tokenised with the model's own tokenizer."""
    ids: list[int] = []
    for doc in iter_texts(data, split, text_field, separator=separator):
        ids += tokenizer.encode(doc) + [tokenizer.eot_id]
        if len(ids) >= max_tokens:
            break
    n = (len(ids) - 1) // block_size
    if n == 0:
        raise ConfigError(f"{data} has fewer than {block_size + 1} tokens")
    t = torch.tensor(ids[: n * block_size + 1])
    was = model.training
    model.eval()
    total = 0.0
    for i in range(0, n, 16):
        rows = torch.arange(i, min(i + 16, n))[:, None] * block_size + torch.arange(block_size + 1)
        w = t[rows].to(device)
        _, loss = model(w[:, :-1], w[:, 1:])
        total += float(loss) * len(rows)
    model.train(was)
    return total / n
