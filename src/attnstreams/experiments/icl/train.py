"""Experiment 1 (paper.md section 3): train ToyICL variants x seeds at once on one device.

Every (variant, seed) run is an independent ToyICL with the authors' update, plain SGD with a
decoupled per-step weight decay: p <- (1 - wd) p - lr g. All runs are stacked into one
`StackedToyICL` (stacked.py: the same forward pass, checked against ToyICL, as one set of
kernels); the summed loss gives each run exactly its own gradient, and SGD is elementwise, so
each run trains as if alone. A seed fixes the model's initial weights, the class means and the
data stream, shared by every variant: variants differ only by the architecture.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from attnstreams.experiments.icl.stacked import StackedToyICL
from attnstreams.experiments.icl.task import (
    TEST_SETS,
    ICLTaskConfig,
    make_task,
    make_test_sets,
)
from attnstreams.models.toy import TOY_INITS, ToyICL, ToyICLConfig
from attnstreams.run import checkpoint
from attnstreams.run.config import ConfigError, check_choice, check_range, differences
from attnstreams.run.logs import (
    GracefulStop,
    JSONLLog,
    TrainingInterrupted,
    check_finite,
    device_name,
    open_run,
    progress_bar,
    window_steps,
    write_text_atomic,
)
from attnstreams.streams import StreamConfig


@dataclass(frozen=True)
class ICLTrainConfig:
    """The authors' experiment: SGD lr 0.01, batch 128, 75,000 steps, test sets every 500 steps;
    weight decay decoupled and per step, p <- (1 - 1e-6) p - lr g (`torch.optim.SGD`'s
    weight_decay would shrink by lr * 1e-6 a step, 100x less). Every field left at its default
    is the authors' setting; `deviations()` names the others (reports print them)."""

    steps: int = 75_000
    batch: int = 128
    lr: float = 0.01
    weight_decay: float = 1e-6  # decoupled: the factor (1 - weight_decay) every step
    eval_every: int = 500
    eval_size: int = 10_000
    data_chunk: int = 100  # batches drawn at once per seed: part of the data stream's definition
    scaled: bool = False  # 1/sqrt(d) attention scaling (off in the authors' code)
    init: str = "jax"  # ToyICLConfig.init: how the authors' code draws MLP and read-out weights
    # fp32 | tf32 (float32 matmuls on tensor cores; JAX's GPU default) | bf16 (bf16 autocast:
    # matmuls in bfloat16, weights and updates in float32; float32 matmuls left use TF32).
    # On CUDA this sets torch.backends.cuda.matmul.allow_tf32 for the process.
    precision: str = "fp32"
    task: ICLTaskConfig = field(default_factory=ICLTaskConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "eval_every", "eval_size", "data_chunk"):
            check_range(name, getattr(self, name), lo=1)
        check_range("lr", self.lr, lo=0.0, lo_open=True)
        check_range("weight_decay", self.weight_decay, lo=0.0, hi=0.5)
        check_choice("precision", self.precision, ("fp32", "tf32", "bf16"))
        check_choice("init", self.init, TOY_INITS)

    def model_config(self, stream: str) -> ToyICLConfig:
        """The ToyICL of this task with the given stream variant."""
        t = self.task
        return ToyICLConfig(
            d_in=t.token_dim,
            n_labels=t.labels,
            scaled=self.scaled,
            attn_std=t.dim**-0.5,
            init=self.init,
            stream=StreamConfig.parse(stream),
        )

    def deviations(self) -> dict[str, tuple]:
        """Settings that differ from the authors' experiment: see `deviations`."""
        return deviations(self.to_dict())

    def to_dict(self) -> dict:
        """The settings as a plain dict, for configs and checkpoints."""
        return asdict(self)


PERFORMANCE_ONLY = ("data_chunk",)  # settings that change how fast, not what is computed


def deviations(config: dict) -> dict[str, tuple]:
    """name -> (ours, the authors') for each setting of an ICLTrainConfig dict that differs
    from the authors' experiment; a setting missing from an older run's config reads as
    "not recorded". Precision counts only as bf16 (fp32 and TF32 matmuls both train in float32;
    TF32 is JAX's GPU default)."""
    ref, out = ICLTrainConfig().to_dict(), {}
    for name, theirs in ref.items():
        ours = config.get(name, "not recorded")
        if name == "task":
            for k, t in theirs.items():
                if (o := (ours if isinstance(ours, dict) else {}).get(k, "not recorded")) != t:
                    out[f"task.{k}"] = (o, t)
        elif name == "precision":
            if ours == "bf16":
                out[name] = (ours, "float32")
        elif name not in PERFORMANCE_ONLY and ours != theirs:
            out[name] = (ours, theirs)
    return out


def init_model(cfg: ICLTrainConfig, stream: str, seed: int) -> ToyICL:
    """The initial weights of one run: a function of the seed only (shared across variants)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ToyICL(cfg.model_config(stream))


class ICLGrid:
    """variants x seeds ToyICL runs trained together; see the module docstring."""

    def __init__(
        self,
        variants: list[str],
        seeds: list[int],
        cfg: ICLTrainConfig = ICLTrainConfig(),
        device: str | torch.device = "cpu",
        compile: bool = False,
        cuda_graph: bool | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """cuda_graph: capture the training step as a CUDA graph (default: on CUDA devices).
        dtype: of weights and tokens (float64 for the equivalence tests)."""
        if not variants or not seeds:
            raise ConfigError("need at least one variant and one seed")
        if len(set(variants)) != len(variants) or len(set(seeds)) != len(seeds):
            raise ConfigError("variants and seeds must not repeat")
        for s in seeds:
            check_range("seed", s, lo=0, hi=2**62)
        self.variants = [StreamConfig.parse(v).name for v in variants]
        self.seeds, self.cfg, self.device = list(seeds), cfg, torch.device(device)
        self.dtype = dtype
        runs = [[init_model(cfg, v, s).to(dtype) for s in self.seeds] for v in self.variants]
        self.model = StackedToyICL(runs, self.device)
        self._params = list(self.model.params.values())
        self.opt = torch.optim.SGD(self._params, lr=cfg.lr)
        self.tasks = [make_task(cfg.task, s, self.device) for s in self.seeds]
        sets = [make_test_sets(cfg.task, s, cfg.eval_size, self.device) for s in self.seeds]
        self.tests = {  # tokens padded once here, not in every forward
            n: (
                self.model.pad(torch.stack([s[n][0] for s in sets])).to(dtype),
                torch.stack([s[n][1] for s in sets]),
            )
            for n in TEST_SETS
        }
        self.step = 0
        self._chunk: tuple[torch.Tensor, torch.Tensor] | None = None
        self._chunk_start = 0
        self._chunk_states = [t.g.get_state() for t in self.tasks]
        self._loss_sum = torch.zeros(len(self.variants), len(self.seeds), device=self.device)
        self._losses = self.model.losses
        self._forward = self.model.forward
        if compile:
            self._losses = torch.compile(self._losses, fullgraph=True, dynamic=False)
            self._forward = torch.compile(self._forward, fullgraph=True, dynamic=False)
        self.cuda_graph = self.device.type == "cuda" if cuda_graph is None else cuda_graph
        if self.cuda_graph and self.device.type != "cuda":
            raise ConfigError("CUDA graphs need a CUDA device")
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static: tuple[torch.Tensor, torch.Tensor] | None = None
        self._warm = 0
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = cfg.precision != "fp32"

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, torch.bfloat16, self.cfg.precision == "bf16")

    # -- data ---------------------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's (S, B, T, d) tokens and (S, B) targets, drawn chunk by chunk per seed."""
        k = self.step - self._chunk_start
        if self._chunk is None or k >= self.cfg.data_chunk:
            self._chunk_start, k = self.step, 0
            self._chunk_states = [t.g.get_state() for t in self.tasks]
            draws = [t.sample(self.cfg.data_chunk, self.cfg.batch) for t in self.tasks]
            x, y = (torch.stack([d[i] for d in draws], 1) for i in (0, 1))
            self._chunk = self.model.pad(x).to(self.dtype), y
        return self._chunk[0][k], self._chunk[1][k]

    # -- training -----------------------------------------------------------------------------
    def _step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with self._autocast():
            losses = self._losses(x, y)
        losses.sum().backward()
        with torch.no_grad():  # decoupled decay, then the gradient step: (1 - wd) p - lr g
            torch._foreach_mul_(self._params, 1.0 - self.cfg.weight_decay)
        self.opt.step()
        self._loss_sum += losses.detach()

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """One SGD step of every run, on this step's data or on `batch` ((S, B, T, d) tokens,
        (S, B) targets). On CUDA, after 3 warm-up steps the whole step (forward, backward,
        update) is captured once as a CUDA graph and replayed: same kernels, no per-step launch
        overhead and no host synchronisation."""
        x, y = self._batch() if batch is None else (self.model.pad(batch[0]), batch[1])
        if self._static is None:  # fixed input buffers: what a graph (and compile) sees
            self._static = (torch.empty_like(x, dtype=self.dtype), torch.empty_like(y))
        self._static[0].copy_(x)
        self._static[1].copy_(y)
        if self._graph is None and self.cuda_graph and self._warm >= 3:
            self.opt.zero_grad(set_to_none=True)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._step(*self._static)
        if self._graph is not None:
            self._graph.replay()
        else:
            self.opt.zero_grad(set_to_none=True)
            if self.cuda_graph:  # warm-up on a side stream, as graph capture requires
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    self._step(*self._static)
                torch.cuda.current_stream(self.device).wait_stream(side)
            else:
                self._step(*self._static)
            self._warm += 1
        self.step += 1

    @torch.no_grad()
    def evaluate(self, chunk: int = 10_000) -> torch.Tensor:
        """Accuracy on each test set, (V, S, len(TEST_SETS))."""
        acc = []
        for name in TEST_SETS:
            x, y = self.tests[name]
            with self._autocast():
                hits = sum(
                    (self._forward(x[:, a : a + chunk]).argmax(-1) == y[:, a : a + chunk]).sum(-1)
                    for a in range(0, x.size(1), chunk)
                )
            acc.append(hits.float() / x.size(1))
        return torch.stack(acc, -1)

    def run_model(self, variant: str, seed: int) -> ToyICL:
        """One run's current weights as a plain ToyICL (on this grid's device)."""
        v, s = self.variants.index(StreamConfig.parse(variant).name), self.seeds.index(seed)
        model = init_model(self.cfg, variant, seed).to(self.device, self.dtype)
        model.load_state_dict(self.model.run_state(v, s))
        return model

    def eval_rows(self, steps_since: int) -> list[dict]:
        """One metrics row per run; the window's only reads from the device."""
        acc = self.evaluate().cpu()
        loss = (self._loss_sum / max(steps_since, 1)).cpu()
        self._loss_sum.zero_()
        rows = []
        for i, v in enumerate(self.variants):
            for j, s in enumerate(self.seeds):
                row = {"step": self.step, "variant": v, "seed": s}
                row["train_loss"] = float(loss[i, j]) if steps_since else None
                row.update({f"acc_{n}": float(acc[i, j, k]) for k, n in enumerate(TEST_SETS)})
                rows.append(row)
        return rows

    # -- checkpoints ------------------------------------------------------------------------
    def meta(self) -> dict:
        """What a checkpoint records besides tensors; a resume checks it matches."""
        return {
            "kind": "icl-grid",
            "step": self.step,
            "chunk_start": self._chunk_start,
            "variants": self.variants,
            "seeds": self.seeds,
            "config": self.cfg.to_dict(),
        }

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every run's weights, the data generators' states and the loss window, by name."""
        t = {
            f"{v}/{k}": p
            for i, v in enumerate(self.variants)
            for k, p in self.model.run_state(i).items()
        }
        t.update(
            {f"data_rng/{s}": st for s, st in zip(self.seeds, self._chunk_states, strict=True)}
        )
        t["loss_sum"] = self._loss_sum
        return t

    def save(self, path: Path, saver: checkpoint.BackgroundSaver) -> None:
        """Hand a checkpoint to `saver`, which writes it while training goes on."""
        saver.save(path, self.state_tensors(), self.meta())

    def load(self, path: Path) -> None:
        """Resume from a checkpoint of the same grid (refuses any other)."""
        tensors, meta = checkpoint.load(path, self.device)
        mine = self.meta()
        for key in ("kind", "variants", "seeds", "config"):
            if meta.get(key) != mine[key]:
                changed = "; ".join(differences({key: meta.get(key)}, {key: mine[key]}))
                raise ConfigError(
                    f"checkpoint {path} was made with a different {key} ({changed}); cannot resume"
                )
        expected = self.state_tensors()
        if set(tensors) != set(expected):
            raise ConfigError(f"checkpoint {path} does not match this grid's parameters")
        for i, v in enumerate(self.variants):
            state = {k: t for k, t in tensors.items() if k.startswith(f"{v}/")}
            self.model.load_run(i, slice(None), {k.split("/", 1)[1]: t for k, t in state.items()})
        self._loss_sum.copy_(tensors["loss_sum"])
        for s, task in zip(self.seeds, self.tasks, strict=True):
            task.g.set_state(tensors[f"data_rng/{s}"].cpu())
        self.step, self._chunk = meta["chunk_start"], None
        self._batch()  # redraw the data chunk the checkpoint fell in, then move to its step
        self.step = meta["step"]


def train(
    grid: ICLGrid,
    out: Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train to cfg.steps, evaluating every eval_every steps: metrics rows appended to
    metrics.jsonl, then a checkpoint. stop_after: leave at that step with a checkpoint
    (continue later with resume=True).
    Returns a summary (wall time, steps/s, device)."""

    def restore(ckpt: Path) -> int:
        grid.load(ckpt)
        return grid.step

    out, ckpt, metrics = open_run(out, resume, restore)
    write_text_atomic(out / "config.json", json.dumps(grid.meta() | {"step": None}, indent=1))
    cfg = grid.cfg
    t0 = time.perf_counter()
    start = grid.step
    eval_s = 0.0  # evaluations and checkpoint hand-offs (the writes overlap training)
    with (
        GracefulStop() as stop,
        checkpoint.BackgroundSaver() as saver,  # its exit waits for the last write
        JSONLLog(metrics, append=resume) as log,
        progress_bar(cfg.steps, "icl", "step", progress, initial=grid.step) as bar,
    ):
        if grid.step == 0:
            for row in grid.eval_rows(0):
                log.write(row | {"elapsed_s": 0.0})
        end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
        saved = False
        while grid.step < end:
            grid.train_step()
            bar.update()
            saved = False
            if grid.step % cfg.eval_every == 0 or grid.step == cfg.steps:
                if grid.device.type == "cuda":  # queued steps are not evaluation time
                    torch.cuda.synchronize(grid.device)
                t_eval = time.perf_counter()
                since = window_steps(grid.step, cfg.eval_every)
                rows = grid.eval_rows(since)
                check_finite(rows, grid.step, since)
                elapsed = time.perf_counter() - t0
                for row in rows:
                    log.write(row | {"elapsed_s": elapsed})
                grid.save(ckpt, saver)
                eval_s += time.perf_counter() - t_eval
                saved = True
                icl_mean = sum(r["acc_icl"] for r in rows) / len(rows)
                bar.set_postfix(icl=f"{icl_mean:.3f}")
            if stop.signum is not None:
                if not saved:
                    grid.save(ckpt, saver)
                raise TrainingInterrupted(grid.step, out, stop.signum)
        if grid.step < cfg.steps and not saved:  # left at stop_after: keep the work
            grid.save(ckpt, saver)
    wall = time.perf_counter() - t0
    summary = {
        "wall_s": wall,
        "steps": grid.step - start,  # this process's (a resumed run reports its own part)
        "step": grid.step,
        "runs": len(grid.variants) * len(grid.seeds),
        "variants": grid.variants,
        "steps_per_s": (grid.step - start) / wall if wall else None,
        "eval_and_checkpoint_s": eval_s,
        "device": device_name(grid.device),
        "torch": torch.__version__,
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary
