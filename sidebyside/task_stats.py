"""Statistics of the authors' task generator, read off the tokens as for ours.

    python sidebyside/task_stats.py PATH/TO/authors-code/toy-Transformer [SEQUENCES] [SEED]

Needs numpy and jax (the authors' `datasets_v2.py` imports it) besides attnstreams. Prints, for
each of the four test-set mixes and the training mix, what `token_statistics` measures (share of
novel / known-bursty / known-i.i.d. sequences, query in context, distinct labels per context,
noise scale, position offsets) as JSON; tests/test_icl_faithful.py holds the numbers.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from attnstreams.experiments.icl.task import token_statistics


def main() -> None:
    sys.path.insert(0, sys.argv[1])
    import datasets_v2 as dg  # noqa: PLC0415 - the authors' module, from the path given

    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    np.random.seed(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    K, L, N, Nmax, D = 512, 32, 8, 32, 85
    mus_label, mus_class, labels_class = dg.get_mus_label_class(K, L, D)
    mixes = {
        "train": dict(B=2, p_B=0.5, p_C=0.5),
        "icl": dict(B=2, p_B=1, p_C=1),
        "icl_flipped": dict(B=2, p_B=1, p_C=0, flip_labels=True),
        "iwl": dict(B=0, p_B=0, p_C=0),
    }
    out = {}
    for name, kw in mixes.items():
        x, _ = dg.generate_input_seqs(
            mus_label,
            mus_class,
            labels_class,
            n,
            N,
            Nmax,
            eps=0.1,
            P=np.ones(K) / K,
            no_repeats=True,
            **kw,
        )
        out[name] = token_statistics(np.asarray(x), mus_class, mus_label, pairs=N)
    print(json.dumps({"sequences": n, **out}, indent=1))


if __name__ == "__main__":
    main()
