"""Story-generator throughput: stories, words, characters and tokens per second (one core).

python benchmarks/stories.py [--n 20000] [--seed 0]
"""

from __future__ import annotations

import argparse
import re
import time

from attnstreams.data.stories import FIRST_NAMES, forbidden_spans, generate_stories
from attnstreams.data.tokenizer import BPETokenizer

_NAME_RE = re.compile(r"\b(" + "|".join(sorted(FIRST_NAMES, key=len, reverse=True)) + r")\b")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20_000, help="stories to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=8192, help="of the BPE used to count tokens")
    args = p.parse_args()

    t0 = time.perf_counter()
    stories = list(generate_stories(args.n, seed=args.seed))
    dt = time.perf_counter() - t0

    words = sum(len(s.split()) for s in stories)
    chars = sum(len(s) for s in stories)
    names = set()
    for s in stories:
        names.update(_NAME_RE.findall(s))
    bad = sum(bool(forbidden_spans(s)) for s in stories)
    # Tokens: a byte-level BPE trained on the first 2,000 stories (the offline default).
    tok = BPETokenizer.train(stories[:2000], vocab_size=args.vocab_size)
    t1 = time.perf_counter()
    tokens = sum(len(ids) + 1 for ids in tok.encode_batch(stories))
    dt_tok = time.perf_counter() - t1

    rows = [
        ("stories", f"{len(stories):,}"),
        ("seconds", f"{dt:.3f}"),
        ("stories/s", f"{len(stories) / dt:,.0f}"),
        ("words/s", f"{words / dt:,.0f}"),
        ("characters/s", f"{chars / dt:,.0f}"),
        (f"tokens/s generated (BPE vocab {tok.vocab_size})", f"{tokens / dt:,.0f}"),
        ("tokens/s tokenised (encode_batch)", f"{tokens / dt_tok:,.0f}"),
        ("mean words/story", f"{words / max(len(stories), 1):.1f}"),
        ("distinct names used", f"{len(names)} of {len(FIRST_NAMES)}"),
        ("stories with forbidden spans", f"{bad}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"{'metric':<{width}}  value")
    print(f"{'-' * width}  {'-' * 12}")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
