"""Run under `torchrun --nproc_per_node 2`: every stream variant in both blocks (with a
residual such as DenseFormer's where a case names one), wrapped by DDP and by FSDP
(`attnstreams.run.parallel.wrap`, as `lm train` wraps it), trains a few AdamW steps on its rows
of each global batch; each rank also trains an unwrapped copy on the whole batch. Writes, per
rank, the largest difference between the two after the steps and the parameters that never
moved (tests/test_parallel.py and tests/test_residual.py read it).

One launch serves every case: process start, imports and the process group are paid once.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import get_model_state_dict

from attnstreams.models.gpt import GPT, MODERN, GPTConfig
from attnstreams.run import parallel

# 2 steps: the second starts from weights the first set through the wrapper (its reduced
# gradients, FSDP's resharded parameters) and from Adam's moments.
STEPS, BATCH, T = 2, 8, 16


def config(stream: str, block: str, residual: str = "plain") -> GPTConfig:
    """A small GPT with 2 key/value heads (GQA), GPT-2's block or the modern one; 4 (no GQA)
    for muddvr, which adds an n_embd-wide mixture to the values."""
    extra = MODERN if block == "modern" else {}
    kv = 4 if residual == "muddvr" else 2
    return GPTConfig(
        vocab_size=61, block_size=T, n_layer=3, n_head=4, n_kv_head=kv, n_embd=32, dropout=0.0,
        stream=stream, residual=residual, **extra,
    )  # fmt: skip


def train(model: torch.nn.Module, forward: torch.nn.Module, rows: slice) -> None:
    """STEPS AdamW steps of `forward` on `rows` of the same seeded global batches."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        idx = torch.randint(61, (BATCH, T + 1), generator=g)
        _, loss = forward(idx[rows, :-1], idx[rows, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main(cases: list[str], out: Path) -> None:
    """cases: "stream/block" or "stream/block/residual" names, block gpt2 or modern."""
    d, device = parallel.init_distributed(torch.device("cpu"))
    rows = d.rows(BATCH)
    report = {}
    for case_name in cases:
        stream, block, *residual = case_name.split("/")
        torch.manual_seed(0)
        start = GPT(config(stream, block, *residual)).double()  # float64: differences are rounding
        ref = copy.deepcopy(start)
        train(ref, ref, slice(None))
        want = ref.state_dict()
        # Parameters the steps left unchanged (a mix or gate no gradient reaches, say).
        still = [k for k, v in start.state_dict().items() if torch.equal(v, want[k])]
        case = {"still": still}
        for mode in ("ddp", "fsdp"):
            model = copy.deepcopy(start)
            forward = parallel.wrap(model, d, device, mode, bucket_mb=1)
            assert parallel.layout(forward, model)[0] == mode, (stream, block, mode)
            train(model, forward, rows)
            got = model.state_dict() if mode == "ddp" else get_model_state_dict(model)
            got = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in got.items()}
            assert got.keys() == want.keys(), (stream, block, mode)
            case[mode] = max((got[k] - want[k]).abs().max().item() for k in want)
        report[case_name] = case
    (out / f"rank{d.rank}.json").write_text(json.dumps(report))
    parallel.shutdown(d)


def check_parallel(tmp_path: Path, cases: list[str]) -> None:
    """2 processes (DDP, then FSDP) against the whole batch in one (this file under torchrun),
    float64, each case STREAM/BLOCK[/RESIDUAL]: the same weights to rounding, every parameter
    moved."""
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [*run, "2", str(Path(__file__)), ",".join(cases), str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    # A gloo process can abort while its threads are torn down after the work ("terminate
    # called without an active exception", seen once under a loaded 2-core machine): the
    # reports, each written before that, are then whole, and they are what is checked.
    reports = [tmp_path / f"rank{rank}.json" for rank in (0, 1)]
    torn_down = "terminate called" in proc.stderr and all(p.is_file() for p in reports)
    assert proc.returncode == 0 or torn_down, proc.stderr[-3000:]
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert list(report) == cases
        for case, r in report.items():
            assert r["still"] == [], (case, r["still"])
            assert r["ddp"] < 1e-10 and r["fsdp"] < 1e-10, (case, r)


if __name__ == "__main__":
    main(sys.argv[1].split(","), Path(sys.argv[2]))
