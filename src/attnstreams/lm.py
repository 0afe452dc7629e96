"""Experiment 2 (paper.md section 4): train GPT language models with or without a stream.

`prepare_data` tokenises a corpus once into token files (and trains the local BPE if asked);
`LMTrainer` trains one model from them with AdamW, warmup + cosine, clipping, bf16 autocast on
GPU, periodic evaluation (held-out loss, IOI, induction, ICL score) and atomic checkpoints that
resume bitwise on CPU.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import torch
from tqdm import tqdm

from . import checkpoint, parallel
from .config import ConfigError, check_choice, check_range, differences
from .data.corpus import iter_texts
from .data.shards import TokenWindows, write_tokens
from .data.tokenizer import BPETokenizer, GPT2Tokenizer, Tokenizer, load_tokenizer
from .ioi import behaviour_metrics, make_ioi_set, single_token_names
from .model import GPT, preset
from .parallel import Dist
from .runlog import (
    CHECKPOINT,
    METRICS,
    GracefulStop,
    JSONLLog,
    NullLog,
    TrainingInterrupted,
    check_finite,
    device_name,
    new_run_dir,
    open_run,
    window_steps,
    write_text_atomic,
)


@dataclass(frozen=True)
class DataConfig:
    data: str = "generated"  # tinystories | generated | PATH
    tokenizer: str = "bpe"  # bpe (trained locally) | gpt2 (tiktoken)
    vocab_size: int = 8192  # of the local BPE
    tokenizer_docs: int = 20_000  # documents the BPE is trained on
    train_tokens: int | None = 20_000_000  # None: the whole corpus (not for `generated`)
    val_tokens: int = 500_000
    text_field: str = "text"
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("tokenizer", self.tokenizer, ("bpe", "gpt2"))
        check_range("vocab_size", self.vocab_size, lo=300, hi=1 << 20)
        check_range("val_tokens", self.val_tokens, lo=1000)
        check_range("seed", self.seed, lo=0, hi=2**62)
        if self.train_tokens is not None:
            check_range("train_tokens", self.train_tokens, lo=1000)
        elif self.data == "generated":
            raise ConfigError("the generated corpus is unbounded: set train_tokens")


def prepare_data(cfg: DataConfig, folder: Path, progress: bool = True) -> Path:
    """Token files train.bin / validation.bin and the tokenizer in `folder` (reused if there)."""
    folder = Path(folder)
    stamp = folder / "data_config.json"
    if stamp.exists():
        if json.loads(stamp.read_text()) != asdict(cfg):
            raise ConfigError(f"{folder} holds tokens of another data config; use another folder")
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    if cfg.tokenizer == "gpt2":
        tok: Tokenizer = GPT2Tokenizer()
    else:
        docs = iter_texts(cfg.data, "train", cfg.text_field, cfg.seed)
        tok = BPETokenizer.train(islice(docs, cfg.tokenizer_docs), cfg.vocab_size)
    tok.save(folder)
    for split, n in (("train", cfg.train_tokens), ("validation", cfg.val_tokens)):
        texts = iter_texts(cfg.data, split, cfg.text_field, cfg.seed)
        write_tokens(texts, tok, folder / f"{split}.bin", max_tokens=n, progress=progress)
    stamp.write_text(json.dumps(asdict(cfg)))
    return folder


@dataclass(frozen=True)
class LMTrainConfig:
    preset: str = "tinystories-8m"
    stream: str = "none"
    steps: int = 2000
    batch: int = 64
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
    eval_batches: int = 20
    ioi_prompts: int = 600
    seed: int = 0
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False
    cuda_graphs: bool = False  # with compile: replay the step's kernels (cuts launch overhead)
    nonfinite: str = "stop"  # stop: end the run, keep the last good checkpoint | skip the step
    parallel: str = "auto"  # under torchrun: ddp | fsdp | auto (fsdp for gpt-1b, else ddp)
    ddp_bucket_mb: float = 25.0  # DDP's gradient buckets; larger: fewer compiled-graph splits

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "eval_every", "eval_batches", "ioi_prompts"):
            check_range(name, getattr(self, name), lo=1)
        check_range("lr", self.lr, lo=0.0, lo_open=True)
        check_range("min_lr_ratio", self.min_lr_ratio, lo=0.0, hi=1.0)
        check_range("warmup", self.warmup, lo=0)
        check_range("grad_clip", self.grad_clip, lo=0.0)
        check_range("weight_decay", self.weight_decay, lo=0.0)
        check_choice("precision", self.precision, ("auto", "fp32", "bf16"))
        check_choice("nonfinite", self.nonfinite, ("stop", "skip"))
        check_choice("parallel", self.parallel, ("auto", "ddp", "fsdp"))
        # >= DDP's first bucket (1 MB): compiled DDP refuses a first bucket larger than the rest
        check_range("ddp_bucket_mb", self.ddp_bucket_mb, lo=1.0)
        check_range("seed", self.seed, lo=0, hi=2**62)
        if self.dropout is not None:
            check_range("dropout", self.dropout, lo=0.0, hi=1.0)
        self.model_config(1000)  # validates preset, stream and block size
        if self.cuda_graphs and not self.compile:
            raise ConfigError("cuda_graphs needs compile")

    def model_config(self, vocab_size: int):
        over = {"vocab_size": vocab_size, "stream": self.stream}
        if self.block_size is not None:
            over["block_size"] = self.block_size
        if self.dropout is not None:
            over["dropout"] = self.dropout
        return preset(self.preset, **over)

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
    def __init__(
        self,
        cfg: LMTrainConfig,
        data_dir: Path,
        device: str | torch.device = "cpu",
        dist: Dist | None = None,
    ) -> None:
        self.cfg, self.device, self.dist = cfg, torch.device(device), dist or Dist()
        self.rows = self.dist.rows(cfg.batch)  # this process's share of each global batch
        self.tokenizer = load_tokenizer(data_dir)
        self.model_cfg = cfg.model_config(self.tokenizer.vocab_size)
        self.train_data = TokenWindows(Path(data_dir) / "train.bin", self.model_cfg.vocab_size)
        self.val_data = TokenWindows(Path(data_dir) / "validation.bin", self.model_cfg.vocab_size)
        torch.manual_seed(cfg.seed)
        self.model = GPT(self.model_cfg).to(self.device)
        mode = (
            cfg.parallel if cfg.parallel != "auto" else "fsdp" if cfg.preset == "gpt-1b" else "ddp"
        )
        # Wrapped before AdamW is built: FSDP swaps the parameters.
        self.forward = parallel.wrap(self.model, self.dist, self.device, mode, cfg.ddp_bucket_mb)
        self.parallel, self.local_param_elems = parallel.layout(self.forward, self.model)
        self.sharded = self.parallel == "fsdp"
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in self.model.named_parameters() if p.dim() < 2]
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
            self.forward = torch.compile(self.forward, mode=mode)
        names = single_token_names(self.tokenizer, _ioi_names())
        self.ioi_set = (
            make_ioi_set(names, cfg.ioi_prompts, seed=cfg.seed) if len(names) >= 2 else []
        )
        self.ioi_names = names

    # -- training --------------------------------------------------------------------------
    def train_step(self) -> torch.Tensor:
        T = self.model_cfg.block_size
        x, y = self.train_data.sample(self.cfg.batch, T, self.data_gen, self.rows)
        pin = self.device.type == "cuda"
        x = (x.pin_memory() if pin else x).to(self.device, non_blocking=True)
        y = (y.pin_memory() if pin else y).to(self.device, non_blocking=True)
        for g in self.opt.param_groups:
            g["lr"] = self.cfg.lr_at(self.step)
        if self.cfg.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with self.autocast:
            _, loss = self.forward(x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
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
    def evaluate(self) -> dict:
        """Held-out loss (and per-position loss for the ICL score), IOI, induction."""
        from .ioi import icl_score

        self.model.eval()
        T = self.model_cfg.block_size
        total, per_pos, n = 0.0, torch.zeros(T), 0
        for x, y in self.val_data.sequential(self.cfg.batch, T, self.cfg.eval_batches):
            with self.autocast:
                logits, _ = self.model(x.to(self.device))
            nll = torch.nn.functional.cross_entropy(
                logits.float().transpose(1, 2), y.to(self.device), reduction="none"
            ).cpu()
            per_pos += nll.sum(0)
            total += float(nll.sum())
            n += nll.numel()
        per_pos /= max(1, n // T)
        out = {"val_loss": total / max(n, 1), "icl_score": icl_score(per_pos)}
        with self.autocast:
            out |= behaviour_metrics(self.model, self.tokenizer, self.device, self.ioi_set)
        self.model.train()
        return out

    # -- checkpoints -----------------------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything a resume needs; collective under FSDP (gathers full tensors)."""
        model_sd, opt_states = parallel.full_state(self.model, self.opt, self.sharded)
        tensors = {f"model/{k}": v for k, v in model_sd.items() if k != "lm_head.weight"}
        opt_meta = []
        for i, st in enumerate(opt_states):
            for k, v in st.items():
                tensors[f"opt/{i}/{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
            opt_meta.append(sorted(st))
        # The rank mean: a resume gives it to every rank, which keeps the window's logged mean.
        tensors["loss_sum"] = parallel.mean(self.loss_sum, self.dist)
        tensors["rng/data"] = self.data_gen.get_state()
        tensors["rng/torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        meta = {
            "kind": "lm",
            "step": self.step,
            "skipped": self.skipped,
            "config": asdict(self.cfg),
            "model": self.model_cfg.to_dict(),
            "opt_state_keys": opt_meta,
            "tokenizer": self.tokenizer.name,
            "vocab_size": self.tokenizer.vocab_size,
        }
        return tensors, meta

    def save(self, path: Path) -> Path:
        """Call on every rank (FSDP gathers); rank 0 writes."""
        tensors, meta = self.state()
        if self.dist.is_main:
            checkpoint.save(path, tensors, meta)
        return path

    def load(self, path: Path) -> None:
        tensors, meta = checkpoint.load(path)
        if meta.get("kind") != "lm":
            raise ConfigError(f"{path} is not a language-model checkpoint")
        saved, mine = _run_defining(meta["config"]), _run_defining(asdict(self.cfg))
        if saved != mine:
            changed = "; ".join(differences(saved, mine))
            raise ConfigError(
                f"checkpoint {path} was made with a different config ({changed}); cannot resume"
            )
        if meta["vocab_size"] != self.tokenizer.vocab_size:
            raise ConfigError(f"checkpoint {path} was made with a different tokenizer")
        opt_states = [
            {k: tensors[f"opt/{i}/{k}"] for k in keys}
            for i, keys in enumerate(meta["opt_state_keys"])
        ]
        if self.sharded:
            parallel.load_full_state(self.model, self.opt, model_tensors(tensors), opt_states)
        else:
            load_model_state(self.model, tensors)
            params = [p for g in self.opt.param_groups for p in g["params"]]
            for p, st in zip(params, opt_states, strict=True):  # `step` too: fused AdamW
                self.opt.state[p] = {k: v.to(p.device) for k, v in st.items()}  # wants it there
        self.loss_sum.copy_(tensors["loss_sum"])
        self.skipped = meta["skipped"]
        self.data_gen.set_state(tensors["rng/data"])
        torch.set_rng_state(tensors["rng/torch"])
        if "rng/cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng/cuda"], self.device)
        self.step = meta["step"]


def _ioi_names() -> tuple[str, ...]:
    from .data.stories import FIRST_NAMES
    from .ioi import CANDIDATE_NAMES

    return CANDIDATE_NAMES + tuple(FIRST_NAMES)


def model_tensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's state dict inside checkpoint tensors (the tied output weight restored)."""
    state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    state["lm_head.weight"] = state.get("wte.weight")
    return state


def load_model_state(model: GPT, tensors: dict[str, torch.Tensor]) -> None:
    """Model weights from checkpoint tensors; a clear error on other architectures."""
    state = model_tensors(tensors)
    own = model.state_dict()
    if set(state) != set(own):
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        raise ConfigError(
            f"checkpoint does not fit this model (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ConfigError(
                f"checkpoint tensor {k} has shape {tuple(v.shape)}, model {tuple(own[k].shape)}"
            )
    model.load_state_dict(state)


def _run_defining(config: dict) -> dict:
    """A config without the settings that change speed only (a resume may change them)."""
    speed_only = ("compile", "cuda_graphs", "ddp_bucket_mb")
    return {k: v for k, v in config.items() if k not in speed_only}


def load_model(path: Path, device="cpu") -> tuple[GPT, dict]:
    """A trained model from a checkpoint, built with its own architecture (eval mode)."""
    from .model import GPTConfig
    from .streams import StreamConfig

    tensors, meta = checkpoint.load(path)
    if meta.get("kind") != "lm":
        raise ConfigError(f"{path} is not a language-model checkpoint")
    m = dict(meta["model"])
    m["stream"] = StreamConfig.parse(m["stream"])
    m.setdefault("vocab_multiple", 1)  # checkpoints from before the embedding was padded
    model = GPT(GPTConfig(**m))
    load_model_state(model, tensors)
    return model.to(device).eval(), meta


def train(
    trainer: LMTrainer,
    out: Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train to cfg.steps with evaluations, metrics rows and a checkpoint every eval_every.
    stop_after: leave at that step with a checkpoint (continue later with resume=True)."""

    def restore(ckpt: Path) -> int:
        trainer.load(ckpt)
        return trainer.step

    cfg, d, main = trainer.cfg, trainer.dist, trainer.dist.is_main
    out, ckpt, metrics = open_run(out, resume, restore, main)
    if main:
        trainer.tokenizer.save(out)
        write_text_atomic(
            out / "config.json",
            json.dumps(
                {
                    "config": asdict(cfg),
                    "model": trainer.model_cfg.to_dict(),
                    "ioi_names": len(trainer.ioi_names),
                },
                indent=1,
            ),
        )
    t0, start, saved = time.perf_counter(), trainer.step, False
    tokens_per_step = cfg.batch * trainer.model_cfg.block_size
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    with (
        GracefulStop() as stop,
        JSONLLog(metrics, append=resume) if main else NullLog() as log,
        tqdm(
            total=cfg.steps,
            initial=trainer.step,
            desc=f"lm {cfg.stream}",
            unit="step",
            disable=not (progress and main) or None,
        ) as bar,
    ):
        if trainer.step == 0:
            log.write({"step": 0, "tokens": 0, **trainer.evaluate()})
        while trainer.step < end:
            trainer.train_step()
            bar.update()
            saved = False
            if trainer.step % cfg.eval_every == 0 or trainer.step == cfg.steps:
                since = window_steps(trainer.step, cfg.eval_every)
                row = {
                    "step": trainer.step,
                    "tokens": trainer.step * tokens_per_step,
                    "train_loss": float(parallel.mean(trainer.loss_sum, d)) / since,
                    "skipped_steps": trainer.skipped,
                    "lr": cfg.lr_at(trainer.step - 1),
                }
                check_finite([row], trainer.step, cfg.eval_every)
                row |= {**trainer.evaluate(), "elapsed_s": time.perf_counter() - t0}
                trainer.loss_sum.zero_()
                log.write(row)
                trainer.save(ckpt)
                saved = True
                parallel.barrier(d)
                bar.set_postfix(
                    val=f"{row['val_loss']:.3f}", ioi=f"{row.get('ioi_accuracy', float('nan')):.2f}"
                )
            if parallel.any_rank(stop.signum is not None, d, trainer.device):
                if not saved:
                    trainer.save(ckpt)
                parallel.barrier(d)
                raise TrainingInterrupted(trainer.step, out, stop.signum or signal.SIGTERM)
        if trainer.step < cfg.steps and not saved:  # left at stop_after: keep the work
            trainer.save(ckpt)
            parallel.barrier(d)
    wall = time.perf_counter() - t0
    summary = {
        "wall_s": wall,
        "steps": trainer.step - start,
        "step": trainer.step,
        "tokens_per_s": (trainer.step - start) * tokens_per_step / wall if wall else None,
        "device": device_name(trainer.device),
        "torch": torch.__version__,
        "params": trainer.model.num_params(),
        "parallel": trainer.parallel,  # what was built: fsdp | ddp | none
        "ddp_bucket_bytes": getattr(trainer.forward, "bucket_bytes_cap", None),
        "param_elems": sum(p.numel() for p in trainer.model.parameters()),
        "param_elems_on_rank0": trainer.local_param_elems,
    }
    if main:
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def run_grid(
    streams: list[str],
    seeds: list[int],
    data_cfg: DataConfig,
    cfg: LMTrainConfig,
    out: Path,
    device="cpu",
    progress: bool = True,
    real_eval: str | None = None,
) -> list[dict]:
    """Every (stream, seed) run in out/<stream>-s<seed>/, one after another, sharing the token
    files in out/data. Finished runs are skipped and interrupted ones resumed, so the same
    command continues a grid."""
    out = new_run_dir(out)
    data_dir = prepare_data(data_cfg, out / "data", progress=progress)
    summaries = []
    for stream in streams:
        for seed in seeds:
            run_dir = out / f"{stream}-s{seed}"
            done = run_dir / "summary.json"
            run_cfg = LMTrainConfig(**{**asdict(cfg), "stream": stream, "seed": seed})
            if done.exists() and json.loads(done.read_text())["step"] >= run_cfg.steps:
                summaries.append(json.loads(done.read_text()))
                continue
            trainer = LMTrainer(run_cfg, data_dir, device)
            resume = (run_dir / CHECKPOINT).exists()
            summary = train(trainer, run_dir, resume=resume, progress=progress)
            if real_eval:
                summary["real_val_loss"] = heldout_loss(
                    trainer.model,
                    trainer.tokenizer,
                    real_eval,
                    trainer.model_cfg.block_size,
                    trainer.device,
                )
                _append_to_last_row(run_dir / METRICS, {"real_val_loss": summary["real_val_loss"]})
                write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=1))
            summaries.append(summary)
    return summaries


def _append_to_last_row(path: Path, extra: dict) -> None:
    lines = path.read_text().splitlines()
    lines[-1] = json.dumps(json.loads(lines[-1]) | extra)
    write_text_atomic(path, "\n".join(lines) + "\n")


@torch.no_grad()
def heldout_loss(
    model: GPT,
    tokenizer: Tokenizer,
    data: str,
    block_size: int,
    device,
    max_tokens: int = 1_000_000,
    text_field: str = "text",
) -> float:
    """Mean next-token loss on a corpus's validation documents (all of a local file's
    documents when it is small), tokenised with the model's own tokenizer."""
    ids: list[int] = []
    for doc in iter_texts(data, "train", text_field):
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
