"""Experiment 2 (paper.md section 4): train GPT language models with or without a stream.

The token files come from `lm.data.prepare_data`; `LMTrainer` trains one model from them with
AdamW, warmup + cosine, clipping, bf16 autocast on GPU, evaluation (held-out loss, IOI,
induction, ICL score) every `eval_every` steps or on a log-spaced schedule, and atomic
checkpoints that resume bitwise on CPU.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from attnstreams.data.shards import TokenWindows
from attnstreams.data.tokenizer import Tokenizer
from attnstreams.experiments.lm.data import (
    IOI_VOCAB,
    MIN_SINGLE,
    data_tokenizer,
)
from attnstreams.experiments.lm.evals import (
    behaviour_metrics,
    make_ioi_set,
    model_logits,
    per_model,
    single_token_names,
    stack_rows,
    story_icl_metrics,
)
from attnstreams.experiments.lm.weights import load_model_state, model_tensors, shared_keys
from attnstreams.models.gpt import GPT, preset
from attnstreams.models.stack import ModelStack
from attnstreams.run import checkpoint, parallel
from attnstreams.run.config import ConfigError, check_choice, check_range, differences
from attnstreams.run.logs import (
    GracefulStop,
    JSONLLog,
    NullLog,
    TrainingInterrupted,
    check_finite,
    device_name,
    open_run,
    progress_bar,
    write_text_atomic,
)
from attnstreams.run.parallel import Dist

if TYPE_CHECKING:
    from attnstreams.models.gpt import GPTConfig


@dataclass(frozen=True)
class LMTrainConfig:
    """One language-model run: model preset, stream, optimizer, schedule and evaluation."""

    preset: str = "tinystories-8m"
    stream: str = "none"
    # plain | denseformer[-dK][-pP] | hc, dhc, mhc [-nN] | attnres[-bK] | mudd | muddvr
    # (residual.py)
    residual: str = "plain"
    steps: int = 2000
    epochs: float | None = None  # set: steps = epochs passes over one copy of the train split
    batch: int = 64  # sequences a step, over all processes
    # The batch in this many pieces a process, their gradients summed before the step: the
    # same step in less memory (speed only: a resume may change it)
    grad_accum: int = 1
    block_size: int | None = None  # None: the preset's context
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup: int = 100
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dropout: float | None = None  # None: the preset's
    eval_every: int = 250
    # 0: evaluate every eval_every steps; N: N evaluations at log-spaced steps from eval_every
    # to the end (dense early, sparse late: cheap long runs that still see early changes)
    eval_log: int = 0
    eval_batches: int = 20  # 0: the whole validation split
    # eval: a checkpoint after every evaluation | end: only at the end and when stopped between
    # evaluations (a stop during one keeps no checkpoint); ~100 MB a write at 8M, which adds
    # up over dozens of evaluations of many runs on one disk
    checkpoints: str = "eval"
    ioi_prompts: int = 600
    icl_early: int = 20  # ICL score: loss on a held-out story's token icl_late minus icl_early
    icl_late: int = 200  # (both clipped to the context; only stories long enough count)
    seed: int = 0
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False
    # torch.compile's backend: inductor (generated kernels); aot_eager traces forward and
    # backward as inductor does but runs them eagerly (a quick check that a model compiles)
    compile_backend: str = "inductor"
    cuda_graphs: bool = False  # with compile: replay the step's kernels (cuts launch overhead)
    nonfinite: str = "stop"  # stop: end the run, keep the last good checkpoint | skip the step
    parallel: str = "auto"  # under torchrun: ddp | fsdp | auto (fsdp for gpt-1b, else ddp)
    ddp_bucket_mb: float = 25.0  # DDP's gradient buckets; larger: fewer compiled-graph splits
    # A local transformers model folder to continue (attnstreams[hf]) instead of a preset; the
    # data must be tokenised with its tokenizer (DataConfig.tokenizer = the same folder).
    init_from: str | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "grad_accum", "eval_every", "ioi_prompts", "icl_late"):
            check_range(name, getattr(self, name), lo=1)
        if self.batch % self.grad_accum:
            raise ConfigError(
                f"batch ({self.batch}) must be divisible by grad_accum ({self.grad_accum})"
            )
        check_range("eval_batches", self.eval_batches, lo=0)
        check_range("eval_log", self.eval_log, lo=0, hi=100_000)
        check_range("icl_early", self.icl_early, lo=0, hi=self.icl_late - 1)
        check_range("lr", self.lr, lo=0.0, lo_open=True)
        if self.epochs is not None:
            check_range("epochs", self.epochs, lo=0.0, lo_open=True, hi=1e4)
        check_range("min_lr_ratio", self.min_lr_ratio, lo=0.0, hi=1.0)
        check_range("warmup", self.warmup, lo=0)
        check_range("grad_clip", self.grad_clip, lo=0.0)
        check_range("weight_decay", self.weight_decay, lo=0.0)
        check_choice("precision", self.precision, ("auto", "fp32", "bf16"))
        check_choice("nonfinite", self.nonfinite, ("stop", "skip"))
        check_choice("checkpoints", self.checkpoints, ("eval", "end"))
        check_choice("parallel", self.parallel, ("auto", "ddp", "fsdp"))
        check_choice("compile_backend", self.compile_backend, ("inductor", "aot_eager", "eager"))
        # >= DDP's first bucket (1 MB): compiled DDP refuses a first bucket larger than the rest
        check_range("ddp_bucket_mb", self.ddp_bucket_mb, lo=1.0)
        check_range("seed", self.seed, lo=0, hi=2**62)
        if self.dropout is not None:
            check_range("dropout", self.dropout, lo=0.0, hi=1.0)
        model = self.model_config(1000)  # validates preset, stream, residual and block size
        if self.cuda_graphs and not (self.compile and self.compile_backend == "inductor"):
            raise ConfigError("cuda_graphs needs compile with the inductor backend")
        if self.init_from is not None and model.residual.active:
            raise ConfigError("--init-from continues a transformers model as it is: no --residual")
        if self.init_from is not None and self.parallel == "fsdp":
            raise ConfigError("--init-from trains on one process or under DDP, not FSDP")
        if self.init_from is not None:
            from attnstreams.models.hf import check_model_folder, check_stream

            if not isinstance(self.init_from, str):
                raise ConfigError(f"init_from must be a folder path, got {self.init_from!r}")
            check_model_folder(self.init_from)
            if model.stream.active:  # refused here, before any work
                check_stream(self.stream)

    def model_config(self, vocab_size: int) -> GPTConfig:
        """The preset's GPTConfig with this run's stream, residual, block size and dropout."""
        over = {"vocab_size": vocab_size, "stream": self.stream, "residual": self.residual}
        if self.block_size is not None:
            over["block_size"] = self.block_size
        if self.dropout is not None:
            over["dropout"] = self.dropout
        return preset(self.preset, **over)

    def eval_steps(self) -> list[int]:
        """The steps after which the run evaluates and checkpoints, the last step always."""
        if not self.eval_log:
            return [*range(self.eval_every, self.steps, self.eval_every), self.steps]
        first = min(self.eval_every, self.steps)
        points = np.geomspace(first, self.steps, self.eval_log)
        return sorted({round(float(p)) for p in points} | {self.steps})

    def lr_at(self, step: int) -> float:
        """Linear warmup, then cosine down to min_lr_ratio * lr."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (
            self.min_lr_ratio
            + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        )


class LMTrainer:
    """One model, its optimizer, data and evaluation sets: a run's training state."""

    def __init__(
        self,
        cfg: LMTrainConfig,
        data_dir: Path,
        device: str | torch.device = "cpu",
        dist: Dist | None = None,
    ) -> None:
        self.cfg, self.device, self.dist = cfg, torch.device(device), dist or Dist()
        self.rows = self.dist.rows(cfg.batch)  # this process's share of each global batch
        if (self.rows.stop - self.rows.start) % cfg.grad_accum:
            raise ConfigError(
                f"batch ({cfg.batch}) must be divisible by {self.dist.world} processes x "
                f"grad_accum ({cfg.grad_accum})"
            )
        self.data_dir = Path(data_dir)
        self.tokenizer = data_tokenizer(data_dir)
        torch.manual_seed(cfg.seed)
        if cfg.init_from is None:
            self.model_cfg = cfg.model_config(self.tokenizer.vocab_size)
            check_logits_fit(cfg, self.model_cfg, self.device)
            self.model = GPT(self.model_cfg).to(self.device)
        else:  # a transformers model with a stream added (models/hf.py)
            from attnstreams.models.hf import HFCausalLM

            self.model = HFCausalLM(cfg.init_from, cfg.stream, cfg.block_size).to(self.device)
            self.model_cfg = self.model.cfg
            if self.tokenizer.vocab_size > self.model_cfg.vocab_size:
                raise ConfigError(
                    f"the data's tokenizer has {self.tokenizer.vocab_size:,} tokens, the model "
                    f"{self.model_cfg.vocab_size:,}: tokenise with --tokenizer {cfg.init_from}"
                )
        self.train_data = TokenWindows(self.data_dir / "train.bin", self.model_cfg.vocab_size)
        self.val_data = TokenWindows(self.data_dir / "validation.bin", self.model_cfg.vocab_size)
        if self.dist.rank:  # same initial weights on every rank, its own dropout masks
            torch.manual_seed(_rank_seed(cfg.seed, self.dist.rank))
        mode = (
            cfg.parallel if cfg.parallel != "auto" else "fsdp" if cfg.preset == "gpt-1b" else "ddp"
        )
        # Wrapped before AdamW is built: FSDP swaps the parameters.
        self.forward = parallel.wrap(self.model, self.dist, self.device, mode, cfg.ddp_bucket_mb)
        self.wrapped = self.forward  # DDP's module (for no_sync), before any compile
        self.parallel, self.local_param_elems = parallel.layout(self.forward, self.model)
        self.sharded = self.parallel == "fsdp"
        # Matrices decay; biases, norms and the stream mixes (any shape) do not.
        decay = [p for n, p in self.model.named_parameters() if _decays(n, p)]
        no_decay = [p for n, p in self.model.named_parameters() if not _decays(n, p)]
        self.opt = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            fused=self.device.type == "cuda",
        )
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.loss_sum = torch.zeros((), device=self.device)  # training loss since the last eval
        self.skipped = 0  # non-finite steps skipped (nonfinite="skip")
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)
        if cfg.cuda_graphs and (self.dist.world > 1 or self.device.type != "cuda"):
            raise ConfigError("cuda_graphs needs one CUDA device (no DDP/FSDP)")
        if cfg.compile:  # reduce-overhead: torch.compile's CUDA graphs of forward and backward
            mode = "reduce-overhead" if cfg.cuda_graphs else None
            self.forward = torch.compile(self.forward, mode=mode, backend=cfg.compile_backend)
        self.ioi_set, self.ioi_names = ioi_set_for(self.data_dir, self.tokenizer, cfg.ioi_prompts)
        T = self.model_cfg.block_size
        self.icl_late = min(cfg.icl_late, T - 1)
        self.icl_early = min(cfg.icl_early, self.icl_late - 1)
        long = [d for d in self.val_data.documents(self.tokenizer.eot_id) if len(d) > self.icl_late]
        self.icl_stories = (
            torch.from_numpy(np.stack([d[: self.icl_late + 1] for d in long]).astype(np.int64))
            if long
            else None
        )

    # -- the runner interface of `train_runs` (lm/stack.py's LMStack runs several) ----------
    stack_info: dict | None = None  # the runs trained together with this one; None: alone

    @property
    def members(self) -> list[LMTrainer]:
        """The runs this runner advances: itself."""
        return [self]

    def evaluate_runs(self, stop: GracefulStop | None = None) -> list[dict]:
        """`evaluate` of each run this runner advances: its own."""
        return [self.evaluate(stop)]

    def loaded(self) -> None:
        """After every member has loaded its checkpoint: nothing to gather for one run."""

    def sync(self) -> None:
        """Before members are saved: their state is already their own."""

    # -- training --------------------------------------------------------------------------
    def train_step(self) -> torch.Tensor:
        """One AdamW step on a fresh batch; returns its loss (not synchronised). With
        grad_accum k, this process's rows go through in k pieces, each backward adding 1/k of
        its mean loss's gradient: the gradient of the whole batch's mean loss."""
        T, k = self.model_cfg.block_size, self.cfg.grad_accum
        x, y = self.train_data.sample(self.cfg.batch, T, self.data_gen, self.rows)
        pin = self.device.type == "cuda"
        x = (x.pin_memory() if pin else x).to(self.device, non_blocking=True)
        y = (y.pin_memory() if pin else y).to(self.device, non_blocking=True)
        for g in self.opt.param_groups:
            g["lr"] = self.cfg.lr_at(self.step)
        self.opt.zero_grad(set_to_none=True)
        losses = []
        for i, (xi, yi) in enumerate(zip(x.chunk(k), y.chunk(k), strict=True)):
            # gradients cross processes once, after the last piece
            with parallel.grad_sync(self.wrapped, self.model, i == k - 1):
                if self.cfg.cuda_graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                with self.autocast:
                    _, loss = self.forward(xi, yi)
                (loss if k == 1 else loss / k).backward()
            losses.append(loss.detach())
        loss = losses[0] if k == 1 else torch.stack(losses).mean()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if self.cfg.nonfinite == "skip" and parallel.any_rank(  # syncs: only if asked
            not torch.isfinite(loss), self.dist, self.device
        ):
            self.opt.zero_grad(set_to_none=True)
            self.skipped += 1
        else:
            self.opt.step()
            self.loss_sum += loss.detach()
        self.step += 1
        return loss.detach()

    # -- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, stop: GracefulStop | None = None, models: ModelStack | None = None):
        """Held-out loss and bits per byte, the ICL score within held-out stories, IOI and
        induction; in eval mode (no dropout). `stop`: a signal it has caught ends the
        evaluation between batches (EvaluationStopped), so a long one does not hold it up.
        `models`: a stack of this run's model and others of its config (lm/stack.py), all
        evaluated at once on this run's evaluation data: a list of dicts, one a model."""
        model = self.model if models is None else models
        model.eval()
        T = self.model_cfg.block_size
        total = torch.zeros(1 if models is None else models.size, device=self.device).double()
        n, batches = 0, self.cfg.eval_batches or None
        for x, y in self.val_data.sequential(self.cfg.batch, T, batches):
            if stop is not None and stop.signum is not None and self.dist.world == 1:
                model.train()
                raise EvaluationStopped(stop.signum)
            rows = stack_rows(model, len(x))
            for i in range(0, len(x), rows):
                with self.autocast:
                    logits = model_logits(model, x[i : i + rows].to(self.device))
                target = y[i : i + rows].to(self.device).expand(len(logits), -1, -1)
                nll = torch.nn.functional.cross_entropy(
                    logits.float().flatten(0, 1).transpose(1, 2),
                    target.flatten(0, 1),
                    reduction="none",
                )
                total += nll.double().view(len(logits), -1).sum(1)
            n += y.numel()
        per_byte = self.val_data.tokens_per_byte
        outs = []
        for loss in (total / max(n, 1)).tolist():
            out = {"val_loss": loss}
            if per_byte is not None:
                out["val_bpb"] = loss * per_byte / math.log(2)
            outs.append(out)
        with self.autocast:
            if self.icl_stories is not None:
                got = story_icl_metrics(
                    model,
                    self.icl_stories.to(self.device),
                    self.icl_early,
                    self.icl_late,
                    self.tokenizer.eot_id,
                )
                for out, g in zip(outs, per_model(model, got), strict=True):
                    out |= g
            got = behaviour_metrics(model, self.tokenizer, self.device, self.ioi_set)
            for out, g in zip(outs, per_model(model, got), strict=True):
                out |= g
        model.train()
        return outs if models is not None else outs[0]

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything a resume needs; collective under FSDP (gathers full tensors)."""
        model_sd, opt_states = parallel.full_state(self.model, self.opt, self.sharded)
        tied = shared_keys(self.model)  # a tied weight is stored once, under its first name
        tensors = {f"model/{k}": v for k, v in model_sd.items() if k not in tied}
        opt_meta = []
        for i, st in enumerate(opt_states):
            for k, v in st.items():
                tensors[f"opt/{i}/{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
            opt_meta.append(sorted(st))
        # The rank mean: a resume gives it to every rank, which keeps the window's logged mean.
        tensors["loss_sum"] = parallel.mean(self.loss_sum, self.dist)
        tensors["rng/data"] = self.data_gen.get_state()
        # Every rank's dropout generator (collective): each rank resumes its own masks.
        for r, st in enumerate(parallel.gather(torch.get_rng_state(), self.dist)):
            tensors[_rng_key("torch", r)] = st
        if self.device.type == "cuda":
            for r, st in enumerate(
                parallel.gather(torch.cuda.get_rng_state(self.device), self.dist)
            ):
                tensors[_rng_key("cuda", r)] = st
        meta = {
            "kind": "lm",
            "step": self.step,
            "skipped": self.skipped,
            "config": asdict(self.cfg),
            "model": self.model_cfg.to_dict(),
            "opt_state_keys": opt_meta,
            "tokenizer": self.tokenizer.name,
            "vocab_size": self.tokenizer.vocab_size,
            "data": self.data_fingerprint(),
        }
        return tensors, meta

    def data_fingerprint(self) -> dict:
        """The token files' identities (shards.TokenWindows.fingerprint), split by split."""
        return {"train": self.train_data.fingerprint, "validation": self.val_data.fingerprint}

    def save(self, path: Path) -> Path:
        """Call on every rank (FSDP gathers); rank 0 writes."""
        tensors, meta = self.state()
        if self.dist.is_main:
            checkpoint.save(path, tensors, meta)
        return path

    def load(self, path: Path) -> None:
        """Resume from a checkpoint of the same run config and tokenizer (refuses others)."""
        tensors, meta = checkpoint.load(path)
        if meta.get("kind") != "lm":
            raise ConfigError(f"{path} is not a language-model checkpoint")
        saved, mine = run_defining(meta["config"]), run_defining(asdict(self.cfg))
        if saved != mine:
            changed = "; ".join(differences(saved, mine))
            raise ConfigError(
                f"checkpoint {path} was made with a different config ({changed}); cannot resume"
            )
        if meta["vocab_size"] != self.tokenizer.vocab_size:
            raise ConfigError(f"checkpoint {path} was made with a different tokenizer")
        saved_data = meta.get("data")  # None: a checkpoint from before it was recorded
        data = self.data_fingerprint()
        if saved_data is not None and saved_data != data:
            changed = "; ".join(differences(saved_data, data))
            raise ConfigError(
                f"checkpoint {path} was trained on other token files ({changed}); cannot "
                f"resume on {self.data_dir}"
            )
        opt_states = [
            {k: tensors[f"opt/{i}/{k}"] for k in keys}
            for i, keys in enumerate(meta["opt_state_keys"])
        ]
        if self.sharded:
            state = model_tensors(tensors, self.model)
            parallel.load_full_state(self.model, self.opt, state, opt_states)
        else:
            load_model_state(self.model, tensors)
            params = [p for g in self.opt.param_groups for p in g["params"]]
            for p, st in zip(params, opt_states, strict=True):  # `step` too: fused AdamW
                self.opt.state[p] = {k: v.to(p.device) for k, v in st.items()}  # wants it there
        self.loss_sum.copy_(tensors["loss_sum"])
        self.skipped = meta["skipped"]
        self.data_gen.set_state(tensors["rng/data"])
        r = self.dist.rank
        own = tensors.get(_rng_key("torch", r))
        if own is not None:
            torch.set_rng_state(own)
        else:  # a checkpoint from before every rank kept its own generator
            torch.manual_seed(_rank_seed(self.cfg.seed + meta["step"], r))
        cuda = tensors.get(_rng_key("cuda", r))
        if cuda is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(cuda, self.device)
        self.step = meta["step"]


def check_logits_fit(cfg: LMTrainConfig, model_cfg: GPTConfig, device) -> None:
    """Refuse, before any work, a batch whose logits alone cannot fit the device: evaluation
    takes the whole batch at once, its float32 logits and their log-softmax. A lower bound of
    the need, so nothing that fits is refused."""
    device = torch.device(device)
    if device.type == "cuda":
        total = torch.cuda.mem_get_info(device)[1]
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    T, V = model_cfg.block_size, model_cfg.vocab_size
    need = 2 * cfg.batch * T * V * 4
    if need > total:
        raise ConfigError(
            f"the logits of a batch need at least {need / 2**30:,.0f} GiB (batch {cfg.batch} x "
            f"context {T:,} x vocabulary {V:,}), more than the {total / 2**30:,.0f} GiB of "
            f"{device.type}: use a smaller --batch or --block-size"
        )


def _rng_key(kind: str, rank: int) -> str:
    """Rank 0's generator keeps the name checkpoints always gave it; others get a suffix."""
    return f"rng/{kind}" if rank == 0 else f"rng/{kind}/{rank}"


def _rank_seed(seed: int, rank: int) -> int:
    return (seed + 1_000_003 * rank) % 2**63


#: Parameter names of mixing weights, never weight-decayed (decay would pull a DWA's weight on
#: the current output, which starts at 1, towards 0, and a hyper-connection's identity and
#: ones likewise): stream mixes and gates, the residual module's weights (DWA,
#: hyper-connections, AttnRes's pseudo-queries and key norms, MUDD's and muddvr's generators).
NO_DECAY = ("stream_", "residual.")


def _decays(name: str, p: torch.nn.Parameter) -> bool:
    return p.dim() >= 2 and not any(s in name for s in NO_DECAY)


def ioi_set_for(data_dir: Path, tokenizer: Tokenizer, n: int) -> tuple[list, list[str]]:
    """The IOI set of a data folder: its IOI vocabulary (names read from the train text, or
    held out from it) when it has one, else the built-in lists; only the single-token names
    when there are MIN_SINGLE of them (whole-name log-probabilities otherwise). The same
    fixed set (seed 0) for every run, so every arm and seed answers the same prompts."""
    path = Path(data_dir) / IOI_VOCAB
    if path.is_file():
        vocab = json.loads(path.read_text())
        names, places, objects = vocab["names"], vocab["places"], vocab["objects"]
    else:
        from attnstreams.data.stories import FIRST_NAMES
        from attnstreams.experiments.lm.evals import CANDIDATE_NAMES, OBJECTS, PLACES

        names = single_token_names(tokenizer, CANDIDATE_NAMES + tuple(FIRST_NAMES))
        places, objects = PLACES, OBJECTS
    single = single_token_names(tokenizer, names)
    if len(single) >= MIN_SINGLE:  # one token each where the vocabulary allows
        names = single
    if len(names) < 2:
        return [], names
    return make_ioi_set(names, n, seed=0, places=places, objects=objects), names


def run_defining(config: dict) -> dict:
    """A config without the settings that change speed only (a resume may change them); a
    config saved before eval_log (residual) existed evaluated as eval_log 0 does (was plain)."""
    speed_only = (
        "compile", "compile_backend", "cuda_graphs", "ddp_bucket_mb", "grad_accum", "checkpoints",
    )  # fmt: skip
    older = {"eval_log": 0, "residual": "plain"}
    return {k: v for k, v in {**older, **config}.items() if k not in speed_only}


def train(
    trainer: LMTrainer,
    out: Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train to cfg.steps with evaluations, metrics rows and a checkpoint every eval_every.
    stop_after: leave at that step with a checkpoint (continue later with resume=True)."""
    return train_runs(trainer, [out], resume, progress, stop_after)[0]


def train_runs(
    runner: LMTrainer,
    outs: list[Path],
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> list[dict]:
    """`train` for a runner that advances one run or several at once (`runner.members`, a
    folder each in `outs`; lm/stack.py): every run gets its own metrics rows, evaluations,
    checkpoints and summary, as if it had been trained alone."""
    members, cfg, d = runner.members, runner.cfg, runner.dist
    main = d.is_main
    runs = [
        open_run(out, resume, lambda ck, m=m: m.load(ck) or m.step, main)
        for m, out in zip(members, outs, strict=True)
    ]
    if resume:
        runner.loaded()
    if main:
        for m, (out, _, _) in zip(members, runs, strict=True):
            write_run_files(m, out, runner.stack_info)
    if progress and main and cfg.warmup >= cfg.steps:
        print(
            f"note: the warmup ({cfg.warmup} steps) is not shorter than the run ({cfg.steps}): "
            "the learning rate never reaches --lr (a shorter --warmup does)",
            file=sys.stderr,
        )
    t0, start, saved = time.perf_counter(), runner.step, False
    on_disk = runner.step if resume else None  # the step of the checkpoints written last
    schedule = [0, *cfg.eval_steps()]
    evals = set(schedule[1:])
    tokens_per_step = cfg.batch * runner.model_cfg.block_size
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)

    def save_all() -> None:
        runner.sync()
        for m, (_, ckpt, _) in zip(members, runs, strict=True):
            m.save(ckpt)

    with (
        GracefulStop() as stop,
        contextlib.ExitStack() as files,
        progress_bar(
            cfg.steps, f"lm {cfg.stream}", "step", progress and main, initial=runner.step
        ) as bar,
    ):
        logs = [
            files.enter_context(JSONLLog(metrics, append=resume) if main else NullLog())
            for _, _, metrics in runs
        ]
        outs = [out for out, _, _ in runs]
        if runner.step == 0:
            for log, got in zip(logs, evaluate(runner, stop, outs, on_disk), strict=True):
                log.write({"step": 0, "tokens": 0, **got})
        while runner.step < end:
            runner.train_step()
            bar.update()
            saved = False
            if runner.step in evals:
                since = runner.step - schedule[bisect.bisect_left(schedule, runner.step) - 1]
                rows = []
                for m in members:
                    row = {
                        "step": m.step,
                        "tokens": m.step * tokens_per_step,
                        "train_loss": float(parallel.mean(m.loss_sum, d)) / since,
                        "skipped_steps": m.skipped,
                        "lr": cfg.lr_at(m.step - 1),
                    }
                    check_finite([row], m.step, since)
                    rows.append(row)
                got = evaluate(runner, stop, outs, on_disk)
                for m, row, g, log in zip(members, rows, got, logs, strict=True):
                    row |= {**g, "elapsed_s": time.perf_counter() - t0}
                    m.loss_sum.zero_()
                    log.write(row)
                if cfg.checkpoints == "eval" or runner.step == cfg.steps:
                    save_all()
                    saved, on_disk = True, runner.step
                    parallel.barrier(d)
                bar.set_postfix(
                    val=f"{row['val_loss']:.3f}", ioi=f"{row.get('ioi_accuracy', float('nan')):.2f}"
                )
            if parallel.any_rank(stop.signum is not None, d, runner.device):
                if not saved:
                    save_all()
                parallel.barrier(d)
                folders = ", ".join(str(out) for out, _, _ in runs)
                raise TrainingInterrupted(
                    runner.step,
                    runs[0][0],
                    stop.signum or signal.SIGTERM,
                    text=None
                    if len(runs) == 1
                    else f"interrupted at step {runner.step}: checkpoints saved in {folders}",
                )
        if runner.step < cfg.steps and not saved:  # left at stop_after: keep the work
            save_all()
            parallel.barrier(d)
    wall = time.perf_counter() - t0
    summaries = []
    for m, (out, _, _) in zip(members, runs, strict=True):
        summary = {
            "wall_s": wall,
            "steps": m.step - start,
            "step": m.step,
            "tokens_per_s": (m.step - start) * tokens_per_step / wall if wall else None,
            "device": device_name(m.device),
            "torch": torch.__version__,
            "params": m.model.num_params(),
            "parallel": m.parallel,  # what was built: fsdp | ddp | none
            "ddp_bucket_bytes": getattr(m.forward, "bucket_bytes_cap", None),
            "param_elems": sum(p.numel() for p in m.model.parameters()),
            "param_elems_on_rank0": m.local_param_elems,
            "stack": len(members),  # runs trained together (lm/stack.py); 1: alone
        }
        if main:
            if cfg.init_from is not None and m.step == cfg.steps:  # a transformers folder
                m.model.save_pretrained(out / "hf")
            write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
        summaries.append(summary)
    return summaries


def write_run_files(trainer: LMTrainer, out: Path, stack: dict | None = None) -> None:
    """What a run's folder holds besides its metrics and checkpoint: its tokenizer, IOI
    vocabulary and config.json (`stack`: the runs it was trained with, lm/stack.py)."""
    trainer.tokenizer.save(out)
    vocab = trainer.data_dir / IOI_VOCAB
    if vocab.is_file():  # `lm eval` of this run's checkpoint asks the same IOI set
        write_text_atomic(out / IOI_VOCAB, vocab.read_text())
    data_cfg = trainer.data_dir / "data_config.json"
    config = {
        "config": asdict(trainer.cfg),
        "model": trainer.model_cfg.to_dict(),
        "data": json.loads(data_cfg.read_text()) if data_cfg.is_file() else None,
        "data_dir": str(trainer.data_dir.resolve()),  # where a resume finds them
        "ioi_names": len(trainer.ioi_names),
        "ioi_prompts": len(trainer.ioi_set),
        "icl_positions": [trainer.icl_early, trainer.icl_late],
        "icl_stories": 0 if trainer.icl_stories is None else len(trainer.icl_stories),
        "stack": stack,
    }
    write_text_atomic(out / "config.json", json.dumps(config, indent=1))


class EvaluationStopped(Exception):
    """A signal arrived during an evaluation, which was left unfinished."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def evaluate(runner: LMTrainer, stop: GracefulStop, outs: list[Path], kept: int | None):
    """runner.evaluate_runs(): a dict a run, stopped between batches by a signal: the runs
    then end with the checkpoints of step `kept`, the last written (None: none yet), whose
    metrics rows are the last in their files, so a resume repeats the steps since and their
    evaluation."""
    try:
        return runner.evaluate_runs(stop)
    except EvaluationStopped as e:
        where = ", ".join(str(out) for out in outs)
        if kept is None:
            raise TrainingInterrupted(
                0,
                outs[0],
                e.signum,
                text=f"interrupted in an evaluation before the first checkpoint: nothing to "
                f"resume in {where}; start the run again in another folder",
            ) from None
        raise TrainingInterrupted(
            kept,
            outs[0],
            e.signum,
            text=f"interrupted in the evaluation of step {runner.step}: "
            f"the checkpoint of step {kept} is kept in {where}; continue with --resume",
        ) from None


def with_epochs(cfg: LMTrainConfig, data_dir: Path) -> LMTrainConfig:
    """cfg with `steps` set from `epochs` (passes over one copy of the train split) when given."""
    if cfg.epochs is None:
        return cfg
    meta = json.loads((Path(data_dir) / "train.json").read_text())
    per_copy = meta["tokens"] / meta.get("copies", 1)
    T = cfg.model_config(meta["vocab_size"]).block_size
    steps = max(1, math.ceil(cfg.epochs * per_copy / (cfg.batch * T)))
    return LMTrainConfig(**{**asdict(cfg), "steps": steps})
