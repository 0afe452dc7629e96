"""Train the authors' own toy model (their JAX model and numpy data code, unchanged) for several
runs at once, each exactly as `run_authors_toy.py VARIANT SEED STEPS OUT` would.

    python sidebyside/authors_toy.py AUTHORS_DIR OUT_DIR --runs none:0,value:0 [--steps 75000]
        [--time-limit SECONDS]

AUTHORS_DIR is `authors-code/toy-Transformer` (read, never copied). Their step is bound by
numpy drawing each batch on the CPU (~10-20 ms), so one process a run leaves the GPU idle and
several processes share it badly. Here each run has a producer process that draws that run's
batches in order from the run's own numpy stream (seeded as run_authors_toy does: class means,
the four test sets, then one batch a step) into a shared-memory ring, and one GPU process runs
every run's jitted `update` and their `accuracy` on the four test sets every 500 steps. A
run's data, initial weights and updates are those of run_authors_toy; only the process layout
differs. Metrics go to OUT_DIR/VARIANT-SEED.jsonl in run_authors_toy's format; OUT_DIR/
VARIANT-SEED.npz holds its resume state (their format plus numpy's cached Gaussian), written
every 2,500 steps and at the time limit: rerun the same command to continue.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import sys
import time
from multiprocessing import shared_memory

import numpy as np

K, L, S, N, NMAX, D = 512, 32, 10_000, 8, 32, 85
B, P_B, P_C, EPS, LR, BATCH, RING = 2, 0.5, 0.5, 0.1, 0.01, 128, 32
NAMES = ["mixed", "icl", "icl_flipped", "iwl"]
X_SHAPE, Y_SHAPE = (BATCH, 2 * N + 1, 2 * NMAX + 1 + D), (BATCH, L)


def _authors(path: str):
    sys.path.insert(0, path)
    import datasets_v2  # noqa: PLC0415 - the authors' module, from the path given

    return datasets_v2


def _task(dg, seed: int):
    """Class means and test sets, in run_authors_toy's order on the seed's numpy stream."""
    np.random.seed(seed)
    mus = dg.get_mus_label_class(K, L, D)
    P = np.ones(K) / K

    def g(**kw):
        return dg.generate_input_seqs(*mus, S, N, NMAX, eps=EPS, P=P, no_repeats=True, **kw)

    tests = [g(B=B, p_B=P_B, p_C=P_C), g(B=B, p_B=1, p_C=1), g(B=B, p_B=1, p_C=0, flip_labels=True)]
    tests.append(g(B=0, p_B=0, p_C=0))
    return mus, P, [(np.asarray(x, np.float32), np.asarray(y)) for x, y in tests]


def produce(path, seed, start, state, shm_name, free, full, tests_file) -> None:
    """One run's batches, in order, into its ring; slot i also holds the numpy state before
    its batch was drawn, so the trainer can save a resumable state at any step."""
    os.environ["JAX_PLATFORMS"] = "cpu"  # their generator returns jax arrays: keep off the GPU
    dg = _authors(path)
    mus, P, tests = _task(dg, seed)
    if not os.path.exists(tests_file):
        np.savez(tests_file + ".tmp.npz", *[a for t in tests for a in t])
        os.replace(tests_file + ".tmp.npz", tests_file)
    else:
        np.random.set_state(state)
    shm = shared_memory.SharedMemory(name=shm_name)
    xs, ys, st = _views(shm)
    for n in range(start, 10**9):
        free.acquire()
        i = n % RING
        s = np.random.get_state()
        st[i, :624], st[i, 624:] = s[1], [s[2], s[3], np.float64(s[4]).view(np.uint64)]
        x, y, _ = dg.generate_input_seqs(
            *mus, BATCH, N, NMAX, eps=EPS, P=P, B=B, p_B=P_B, p_C=P_C,
            output_target_labels=True, no_repeats=True,
        )  # fmt: skip
        xs[i], ys[i] = x, np.asarray(y)
        full.release()


def _views(shm):
    nx, ny = RING * int(np.prod(X_SHAPE)) * 4, RING * int(np.prod(Y_SHAPE))
    xs = np.ndarray((RING, *X_SHAPE), np.float32, shm.buf[:nx])
    ys = np.ndarray((RING, *Y_SHAPE), np.bool_, shm.buf[nx : nx + ny])
    st = np.ndarray((RING, 627), np.uint64, shm.buf[nx + ny : nx + ny + RING * 627 * 8])
    return xs, ys, st


def _ring_bytes() -> int:
    return RING * (int(np.prod(X_SHAPE)) * 4 + int(np.prod(Y_SHAPE)) + 627 * 8)


def start_producer(path: str, seed: int, start: int, state, tests_file: str) -> dict:
    """A run's producer process and its ring: {proc, shm, views, free, full}."""
    ctx = mp.get_context("spawn")
    shm = shared_memory.SharedMemory(create=True, size=_ring_bytes())
    free, full = ctx.Semaphore(RING), ctx.Semaphore(0)
    proc = ctx.Process(
        target=produce,
        args=(path, seed, start, state, shm.name, free, full, tests_file),
        daemon=True,
    )
    proc.start()
    return {"proc": proc, "shm": shm, "views": _views(shm), "free": free, "full": full}


def load_tests(tests_file: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The four test sets a producer wrote, (tokens, one-hot labels) each, once it has."""
    while not os.path.exists(tests_file):
        time.sleep(0.1)
    z = np.load(tests_file)
    return [(z[f"arr_{2 * i}"], z[f"arr_{2 * i + 1}"]) for i in range(len(NAMES))]


def _model(path: str, variant: str):
    """Their model module for a variant, loaded on its own (its jitted update traces apart);
    none = their V1 model with layer 2 given no hand-on, as run_authors_toy patches it."""
    name = {"none": "V1", "value": "V1", "key": "K1", "query": "Q1"}[variant]
    spec = importlib.util.spec_from_file_location(
        f"authors_{variant}", os.path.join(path, f"transformer_v2_v_residuals_{name}.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if variant == "none":
        orig = mod.attention_head
        mod.attention_head = lambda QKV, seq, inputs_pre=None, mask=None: orig(QKV, seq, None, mask)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("authors_dir")
    ap.add_argument("out")
    ap.add_argument("--runs", required=True, help="variant:seed,... (none, value, key, query)")
    ap.add_argument("--steps", type=int, default=75_000)
    ap.add_argument("--time-limit", type=float, default=None, help="save and stop after this")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415
    from jax import random  # noqa: PLC0415

    t0, runs, models = time.time(), [], {}
    for spec in a.runs.split(","):
        variant, seed = spec.split(":")
        seed = int(seed)
        T = models.setdefault(variant, _model(a.authors_dir, variant))
        base = os.path.join(a.out, f"{variant}-{seed}")
        params = T.init_network_params(
            2, 3, 150, 2 * NMAX + 1 + D, L, random.PRNGKey(seed), scale=1 / np.sqrt(D)
        )
        start, state = 0, None
        if os.path.exists(base + ".npz"):
            z = np.load(base + ".npz", allow_pickle=False)
            start = int(z["step"])
            state = ("MT19937", z["mt_key"], int(z["mt_pos"]), int(z["has_gauss"]))
            state += (float(z["gauss"]),)
            flat, tree = jax.tree_util.tree_flatten(params)
            params = jax.tree_util.tree_unflatten(
                tree, [jnp.asarray(z[f"p{i}"]) for i in range(len(flat))]
            )
        if start >= a.steps:
            continue
        tests_file = base + ".tests.npz"
        ring = start_producer(a.authors_dir, seed, start, state, tests_file)
        runs.append(
            dict(variant=variant, seed=seed, T=T, params=params, step=start, start=start,
                 base=base, tests_file=tests_file, tests=None, log=open(base + ".jsonl", "a"),
                 **ring)
        )  # fmt: skip

    def save(r, slot):
        st = r["views"][2][slot]
        flat, _ = jax.tree_util.tree_flatten(r["params"])
        np.savez(
            r["base"] + ".tmp.npz", step=r["step"], mt_key=st[:624].astype(np.uint32),
            mt_pos=int(st[624]), has_gauss=int(st[625]), gauss=st[626:627].view(np.float64)[0],
            **{f"p{i}": np.asarray(p) for i, p in enumerate(flat)},
        )  # fmt: skip
        os.replace(r["base"] + ".tmp.npz", r["base"] + ".npz")

    def tests(r):
        if r["tests"] is None:
            r["tests"] = [(jnp.asarray(x), jnp.asarray(y)) for x, y in load_tests(r["tests_file"])]
        return r["tests"]

    stop = False
    while not stop and any(r["step"] < a.steps for r in runs):
        stop = a.time_limit is not None and time.time() - t0 > a.time_limit
        for r in runs:
            n = r["step"]
            if n >= a.steps:
                continue
            r["full"].acquire()  # batch n is in its slot
            slot = n % RING
            if n % 500 == 0 and not (n == r["start"] and n > 0):
                _evaluate(r, n, t0, tests(r))
            if (n % 2500 == 0 and n > r["start"]) or stop:
                save(r, slot)
            if stop:
                continue
            xs, ys, _ = r["views"]
            x, y = xs[slot].copy(), ys[slot].copy()  # JAX may alias host memory: copy first
            r["free"].release()
            r["params"] = r["T"].update(r["params"], x, y, lr=LR)
            r["step"] = n = n + 1
            if n == a.steps:
                _evaluate(r, n, t0, tests(r))
                r["full"].acquire()
                save(r, n % RING)
    for r in runs:
        r["proc"].kill()
        r["log"].close()
        r["shm"].close()
        r["shm"].unlink()
    took = time.time() - t0
    print(json.dumps({"steps": {f"{r['variant']}-{r['seed']}": r["step"] for r in runs},
                      "seconds": round(took, 1)}), flush=True)  # fmt: skip


def _evaluate(r, n, t0, tests) -> None:
    acc = [
        float(r["T"].accuracy(r["params"], x, y, flip_labels=(i == 2)))
        for i, (x, y) in enumerate(tests)
    ]
    row = {"impl": "authors", "variant": r["variant"], "seed": r["seed"], "step": n,
           **{f"acc_{k}": v for k, v in zip(NAMES, acc, strict=True)},
           "elapsed_s": round(time.time() - t0, 1)}  # fmt: skip
    r["log"].write(json.dumps(row) + "\n")
    r["log"].flush()


if __name__ == "__main__":
    main()
