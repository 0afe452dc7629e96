"""Language-model runs that differ only in their seed, trained as one computation.

`LMStack` takes N `LMTrainer`s and stacks their models (models/stack.py): one vmapped forward
and backward, one AdamW step for all, each model's gradient clipped by its own norm. Every run
keeps what makes it itself: its initial weights (each trainer draws them from its seed), its
batches (each trainer's own data generator), its evaluations, metrics and checkpoint, in the
format of a run trained alone, so `lm eval`, `lm report` and a resume without the stack read
it as any other. Without dropout a stacked run equals the run trained alone up to rounding
(tests/test_lm_stack.py, float64); with dropout it draws other masks (ModelStack).

`train_runs` (train.py) drives it as it drives one trainer.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, replace

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnstreams.experiments.lm.train import LMTrainConfig, LMTrainer, _decays, run_defining
from attnstreams.models.stack import ModelStack
from attnstreams.run.config import ConfigError


def check_stack_config(cfg: LMTrainConfig) -> None:
    """One line for a run config that cannot be trained in a stack."""
    if cfg.init_from is not None:
        raise ConfigError("--init-from models train alone, not in a stack")
    if cfg.nonfinite == "skip":  # AdamW would still move a skipped model's weights
        raise ConfigError("a stack stops on a non-finite loss: use --nonfinite stop")


def check_stackable(trainers: list[LMTrainer]) -> None:
    """One line for runs that cannot share a stack."""
    if not trainers:
        raise ConfigError("a stack needs at least one run")
    first = trainers[0]
    same = run_defining(asdict(replace(first.cfg, seed=0)))
    for t in trainers:
        if run_defining(asdict(replace(t.cfg, seed=0))) != same:
            raise ConfigError("stacked runs must have one config but the seed")
        if t.data_dir != first.data_dir:
            raise ConfigError("stacked runs must read the same token files")
        if t.dist.world > 1 or t.device != first.device:
            raise ConfigError("a stack trains on one device in one process (no torchrun)")
    check_stack_config(first.cfg)


#: SDPA kernels a stack may attend with on CUDA (`lm grid --stack-kernel`): a speed choice.
KERNELS = {
    "math": SDPBackend.MATH,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
}


class LMStack:
    """N runs of one config but the seed as one ModelStack on one device; on CUDA, attention
    through SDPA's `kernel` (KERNELS)."""

    def __init__(self, trainers: list[LMTrainer], kernel: str = "math") -> None:
        if kernel not in KERNELS:
            raise ConfigError(f"stack kernel must be one of {', '.join(KERNELS)}, got {kernel!r}")
        check_stackable(trainers)
        self.members = trainers
        first = trainers[0]
        self.cfg, self.dist, self.device = first.cfg, first.dist, first.device
        self.model_cfg = first.model_cfg
        self.stack_info = {"size": len(trainers), "seeds": [t.cfg.seed for t in trainers]}
        for t in trainers:  # fused_loss.py's autograd function has no vmap rule
            t.model.fused_loss = False
        self.stack = ModelStack([t.model for t in trainers])
        cfg, own = self.cfg, dict(first.model.named_parameters())
        groups: dict[bool, list] = {True: [], False: []}
        for name in self.stack.names:  # decay as each model's own parameter would
            groups[_decays(name, own[name])].append(self.stack.stacked(name))
        self.opt = torch.optim.AdamW(
            [
                {"params": groups[True], "weight_decay": cfg.weight_decay},
                {"params": groups[False], "weight_decay": 0.0},
            ],
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            fused=self.device.type == "cuda",
        )
        # Each run's training-loss sum is a view of one (N,) tensor: one add a step.
        self.loss_sum = torch.zeros(len(trainers), device=self.device)
        for i, t in enumerate(trainers):
            self.loss_sum[i] = t.loss_sum
            t.loss_sum = self.loss_sum[i]
        self.step = first.step
        forward = self.stack.call()

        def losses(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor):
            return forward(params, x, y)[1]

        self.losses = losses
        # On CUDA one kernel, the math one by default: under vmap and Inductor, the backward of
        # the memory-efficient kernel failed ("LSE is not correctly aligned (strideH)", torch
        # 2.11, H100); the math kernel is plain batched matmuls, which vmap stacks.
        chosen = [KERNELS[kernel]]
        cuda = self.device.type == "cuda"
        self.attention = (lambda: sdpa_kernel(chosen)) if cuda else contextlib.nullcontext
        if cfg.compile:
            self.losses = torch.compile(losses, mode="reduce-overhead" if cfg.cuda_graphs else None)

    def train_step(self) -> torch.Tensor:
        """One AdamW step of every run on its own fresh batch; returns the (N,) losses."""
        cfg, T, k = self.cfg, self.model_cfg.block_size, self.cfg.grad_accum
        pairs = [t.train_data.sample(cfg.batch, T, t.data_gen, t.rows) for t in self.members]
        x, y = (torch.stack(v) for v in zip(*pairs, strict=True))  # (N, batch, T)
        pin = self.device.type == "cuda"
        x = (x.pin_memory() if pin else x).to(self.device, non_blocking=True)
        y = (y.pin_memory() if pin else y).to(self.device, non_blocking=True)
        for g in self.opt.param_groups:
            g["lr"] = cfg.lr_at(self.step)
        self.opt.zero_grad(set_to_none=True)
        params, pieces = self.stack.params(), []
        for xi, yi in zip(x.chunk(k, dim=1), y.chunk(k, dim=1), strict=True):
            if cfg.cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with self.members[0].autocast, self.attention():
                loss = self.losses(params, xi, yi)
            # each run's parameters get the gradient of its own loss alone
            (loss.sum() if k == 1 else loss.sum() / k).backward()
            pieces.append(loss.detach())
        loss = pieces[0] if k == 1 else torch.stack(pieces).mean(0)
        if cfg.grad_clip > 0:
            self.stack.clip_grad_norms_(cfg.grad_clip)
        self.opt.step()
        self.loss_sum += loss
        self.step += 1
        for t in self.members:
            t.step += 1
        return loss

    def evaluate_runs(self, stop=None) -> list[dict]:
        """Every run's evaluation at once: the stack's models on the same batches of the
        first run's evaluation data (all runs read the same token files), a dict a run."""
        with self.attention():  # the kernel the stack trains with, known to vmap
            return self.members[0].evaluate(stop, models=self.stack)

    def sync(self) -> None:
        """Each run's AdamW state as views of the stack's, where its checkpoint reads them."""
        for i, t in enumerate(self.members):
            own = dict(t.model.named_parameters())
            for name in self.stack.names:
                st = self.opt.state.get(self.stack.stacked(name))
                if st:
                    t.opt.state[own[name]] = {k: v if k == "step" else v[i] for k, v in st.items()}

    def loaded(self) -> None:
        """After each run loaded its checkpoint (weights straight into the stack): the stack's
        AdamW state from theirs."""
        steps = {t.step for t in self.members}
        if len(steps) != 1:
            raise ConfigError(
                f"stacked runs must resume from one step, got checkpoints of steps {sorted(steps)}"
            )
        self.step = steps.pop()
        owns = [dict(t.model.named_parameters()) for t in self.members]
        for name in self.stack.names:
            states = [
                t.opt.state.get(own[name], {}) for t, own in zip(self.members, owns, strict=True)
            ]
            if not states[0]:
                continue
            self.opt.state[self.stack.stacked(name)] = {
                k: states[0][k] if k == "step" else torch.stack([s[k] for s in states])
                for k in states[0]
            }
        self.sync()
