"""Our training step on the authors' exact data stream and initial weights.

    python sidebyside/ours_on_authors_data.py AUTHORS_DIR VARIANT SEED STEPS OUT.jsonl

Draws seed SEED's batches with their generator in the order run_authors_toy uses (producer
process of authors_toy.py), initialises with their init_network_params(PRNGKey(SEED)), and
trains our ICLGrid (float32, this machine's device) on them, evaluating our model on their four
test sets every 500 steps. If a seed's plateau in their runs comes from its data and initial
weights, ours shows it too; if it comes from an implementation difference, ours does not.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import authors_toy as A  # noqa: E402

from attnstreams.experiments.icl.train import ICLGrid, ICLTrainConfig  # noqa: E402


def main() -> None:
    path, variant, seed, steps, out = (
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        int(sys.argv[4]),
        sys.argv[5],
    )
    os.environ["JAX_PLATFORMS"] = "cpu"
    from jax import random  # noqa: PLC0415

    T = A._model(path, variant)
    p = T.init_network_params(2, 3, 150, 150, A.L, random.PRNGKey(seed), scale=1 / np.sqrt(A.D))
    a = lambda t: torch.tensor(np.asarray(t), dtype=torch.float32)  # noqa: E731
    state = {f"attn.{i}.qkv.weight": torch.cat([a(w) for w in p[i]]) for i in (0, 1)}
    for j in range(3):
        state[f"mlp.{j}.weight"], state[f"mlp.{j}.bias"] = a(p[2 + j][0]), a(p[2 + j][1])
    state["readout.weight"] = a(p[5][0])
    grid = ICLGrid([variant], [seed], ICLTrainConfig(eval_size=8), cuda_graph=False)
    grid.model.load_run(0, 0, state)

    tests_file = out + ".tests.npz"
    ring = A.start_producer(path, seed, 0, None, tests_file)
    xs, ys, _ = ring["views"]
    full, free = ring["full"], ring["free"]
    for name, (x, y) in zip(A.NAMES, A.load_tests(tests_file), strict=True):
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        target = y.float().argmax(-1) + (1 if name == "icl_flipped" else 0)
        grid.tests[name] = (grid.model.pad(x)[None], (target % A.L)[None])
    t0 = time.time()
    with open(out, "a") as log:
        for n in range(steps + 1):
            if n % 500 == 0:
                acc = grid.evaluate()[0, 0]
                row = {"impl": "ours-on-authors-data", "variant": variant, "seed": seed, "step": n}
                row |= {f"acc_{k}": float(v) for k, v in zip(A.NAMES, acc, strict=True)}
                log.write(json.dumps(row | {"elapsed_s": round(time.time() - t0, 1)}) + "\n")
                log.flush()
            if n == steps:
                break
            full.acquire()
            slot = n % A.RING
            x, y = torch.from_numpy(xs[slot].copy()), torch.from_numpy(ys[slot].copy())
            free.release()
            grid.train_step((x[None], y.float().argmax(-1)[None]))
    ring["proc"].kill()
    ring["shm"].close()
    ring["shm"].unlink()


if __name__ == "__main__":
    main()
