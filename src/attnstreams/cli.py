"""`attnstreams` command line: a thin layer over the library. Bad input: one line, exit 2."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from attnstreams import __version__
from attnstreams.data.corpus import check_corpus
from attnstreams.run.config import ConfigError, check_range, differences
from attnstreams.run.logs import (
    CHECKPOINT,
    LOCK,
    NonFiniteLoss,
    TrainingInterrupted,
    new_run_dir,
    refuse_overwrite,
)
from attnstreams.run.parallel import RankLost
from attnstreams.streams import KINDS, MIXES, SOURCES

if TYPE_CHECKING:
    from attnstreams.experiments.icl.train import ICLTrainConfig


class DefaultsFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (unless the help already says it)."""

    @staticmethod
    def default_text(action: argparse.Action) -> str:
        """What an option's help says of its default."""
        if isinstance(action, argparse._StoreTrueAction):
            return "(default: off)"
        return "(default: not set)" if action.default is None else "(default: %(default)s)"

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or "default" in text or action.default is argparse.SUPPRESS:
            return text
        return f"{text} {self.default_text(action)}"


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line on stderr (no usage dump) and exit code 2, and
    every option's help states its default."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        """argparse's, with a help line (and so a stated default) for every option."""
        if kwargs.get("help") is None:  # argparse shows no help line (so no default) otherwise
            kwargs["help"] = "-"
        action = super().add_argument(*args, **kwargs)
        if action.help == "-":
            suppressed = action.default is argparse.SUPPRESS or not action.option_strings
            action.help = None if suppressed else DefaultsFormatter.default_text(action)
        return action

    def error(self, message: str) -> None:  # type: ignore[override]
        """One line and exit 2."""
        sys.stderr.write(f"{self.prog}: error: {_one_line(message)}\n")
        raise SystemExit(2)


def _values(text: str | list[str], option: str | None = None) -> list[str]:
    """'1,2 3' or ['1,2', '3'] -> ['1', '2', '3']; given the option's name, none is an error."""
    text = " ".join(text) if isinstance(text, list) else text
    values = [v for v in text.replace(",", " ").split() if v]
    if option is not None and not values:
        raise ConfigError(f"{option} needs at least one value")
    return values


MAX_NEW_TOKENS = 100_000  # lm sample: a longer text is a mistake, not a request
STREAM_HELP = (
    f"kind[-source][-mix], kind {' | '.join(KINDS)}; source {' | '.join(SOURCES)} (default "
    f"previous); mix {' | '.join(MIXES)}; e.g. none, value (the paper's), value-learned, "
    "value-first, value-first-gated, value-shared, value-embed, key-smear (attnstreams.streams "
    "says what each does)"
)
MAX_SEEDS = 10_000  # --seeds of a grid: its seeds are listed before any work


def _seeds(args: argparse.Namespace) -> list[int]:
    """A grid's seeds, args.seed onwards."""
    check_range("seeds", args.seeds, lo=1, hi=MAX_SEEDS)
    return list(range(args.seed, args.seed + args.seeds))


def _amicl_args(p: argparse.ArgumentParser, trials: int | None) -> None:
    """The model's options; trials None (attention maps of one trial): no read-out, trials or
    sampling method, which would do nothing there."""
    from attnstreams.amicl import READOUTS, SIMILARITIES, AMICLConfig

    d = AMICLConfig()
    p.add_argument("--a", type=float, default=d.a, help="previous-token amplitude")
    p.add_argument("--dim", type=int, default=d.dim, help="token dimension D")
    p.add_argument("--classes", type=int, default=d.classes, help="number of classes K")
    p.add_argument("--length", type=int, default=d.length, help="sequence length T (even)")
    p.add_argument("--eps", type=float, default=d.eps, help="item noise amplitude")
    p.add_argument("--noise-std", type=float, default=None, help="item noise std (default 1/dim)")
    p.add_argument("--similarity", default=d.similarity, help=f"{'|'.join(SIMILARITIES)}")
    p.add_argument("--beta", type=float, default=d.beta, help="softmax inverse temperature")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    if trials is None:
        return
    p.add_argument("--readout", default=d.readout, help=f"{'|'.join(READOUTS)}")
    p.add_argument("--trials", type=int, default=trials)
    p.add_argument("--method", default="auto", help="auto|vectors|projections (dot+argmax only)")


def _amicl_config(args, **override):
    from attnstreams.amicl import AMICLConfig

    kw = dict(
        a=args.a,
        dim=args.dim,
        classes=args.classes,
        length=args.length,
        eps=args.eps,
        noise_std=args.noise_std,
        similarity=args.similarity,
        readout=getattr(args, "readout", "argmax"),
        beta=args.beta,
    )
    kw.update(override)
    return AMICLConfig(**kw)


def cmd_amicl_run(args: argparse.Namespace) -> int:
    """`amicl run`: one accuracy estimate of the AMICL model."""
    from attnstreams.amicl import run

    cfg = _amicl_config(args)
    t0 = time.perf_counter()
    res = run(cfg, args.trials, args.seed, method=args.method, progress=not args.json)
    dt = time.perf_counter() - t0
    if args.json:
        print(json.dumps({**res.to_dict(), "seconds": dt, "trials_per_s": args.trials / dt}))
    else:
        print(
            f"accuracy {res.accuracy:.4f} +/- {res.stderr:.4f} ({res.correct}/{res.trials} trials; "
            f"a={cfg.a}, D={cfg.dim}, K={cfg.classes}, T={cfg.length}, {cfg.similarity}/"
            f"{cfg.readout}, {res.method}) in {dt:.2f} s, {args.trials / dt:,.0f} trials/s"
        )
    return 0


def cmd_amicl_sweep(args: argparse.Namespace) -> int:
    """`amicl sweep`: accuracy over a grid of one setting, as CSV and a figure."""
    from attnstreams.amicl import FIELD_NAMES, sweep, sweep_configs
    from attnstreams.run.logs import CSVLog, progress_bar
    from attnstreams.run.plots import plot_sweep

    values = _values(args.values, "--values")
    series = [
        sweep_configs(_amicl_config(args, similarity=sim), args.over, values)
        for sim in _values(args.similarity, "--similarity")
    ]
    check_range("trials", args.trials, lo=1)
    refuse_overwrite(args.out, "sweep.csv", "sweep.png")
    out = new_run_dir(args.out)
    fields = ["series", "accuracy", "stderr", "trials", "correct", "seed", "method", *FIELD_NAMES]
    rows = []
    with (
        CSVLog(out / "sweep.csv", fields) as log,
        progress_bar(sum(map(len, series)), f"sweep {args.over}", "point", not args.json) as bar,
    ):
        for configs in series:
            for res in sweep(configs, args.trials, args.seed, args.method):
                row = {"series": res.config.similarity, **res.to_dict()}
                log.write(row)
                rows.append(row)
                bar.update()
    png = plot_sweep(rows, args.over, out / "sweep.png", title=f"AMICL accuracy vs {args.over}")
    if args.json:
        print(json.dumps({"csv": str(out / "sweep.csv"), "png": str(png), "rows": rows}))
    else:
        for r in rows:
            print(f"{r['series']:>10} {args.over}={r[args.over]:<8} accuracy {r['accuracy']:.4f}")
        print(f"wrote {out / 'sweep.csv'} and {png}")
    return 0


def cmd_amicl_attention(args: argparse.Namespace) -> int:
    """`amicl attention`: score, softmax and argmax maps of one trial."""
    from attnstreams.amicl import attention_trial
    from attnstreams.run.plots import plot_attention

    cfg = _amicl_config(args)
    refuse_overwrite(args.out, "attention.png")
    out = new_run_dir(args.out)
    maps, query = attention_trial(cfg, args.seed)
    png = plot_attention(
        maps,
        out / "attention.png",
        title=f"AMICL attention, a={cfg.a}, T={cfg.length}, {cfg.similarity}",
    )
    if args.json:  # the query's read-out too: which key won, and whether it holds the label
        print(json.dumps({"png": str(png), **query}))
    else:
        right = "right" if query["right"] else "wrong"
        print(f"wrote {png}; the query picks key {query['picked']}: {right}")
    return 0


def _stop_after_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stop-after", type=int, help="leave at this step with a checkpoint; --resume later"
    )


def _icl_args(p: argparse.ArgumentParser) -> None:
    from attnstreams.experiments.icl.train import ICLTrainConfig

    d = ICLTrainConfig()
    p.add_argument("--steps", type=int, default=d.steps, help="SGD steps (default %(default)s)")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--eval-size", type=int, default=d.eval_size, help="sequences per test set")
    p.add_argument(
        "--scaled", action="store_true", help="1/sqrt(d) attention scaling (not the authors')"
    )
    p.add_argument(
        "--init",
        default=d.init,
        help="jax (default: the authors' code under JAX >= 0.5) | jax-legacy (older JAX) | "
        "independent (every tensor on its own key; not the authors')",
    )
    p.add_argument("--device", default="cpu", help="cpu|cuda[:N]")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument(
        "--precision",
        default="fp32",
        help="fp32|tf32 (tensor-core float32 matmuls)|bf16 (autocast)",
    )
    p.add_argument("--no-cuda-graph", action="store_true", help="do not capture the step")
    p.add_argument("--out", help="output folder (default runs/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    _stop_after_arg(p)
    p.add_argument("--config", help="JSON file of option values (flags given here win)")
    p.add_argument("--json", action="store_true")


def _device(name: str) -> torch.device:
    """A device by name; one line for a bad name or a GPU that is not there."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu or cuda, got {name!r}")
    return dev


def eval_cost_note(cfg: ICLTrainConfig) -> str | None:
    """A note when evaluating costs more than training: the four test sets are read at every
    evaluation, so a short --eval-every with the default --eval-size spends a short run
    evaluating."""
    evaluated, trained = 4 * cfg.eval_size, cfg.eval_every * cfg.batch
    if evaluated <= 2 * trained:
        return None
    return (
        f"note: each evaluation reads {evaluated:,} sequences (4 test sets x --eval-size "
        f"{cfg.eval_size:,}), {evaluated / trained:.0f}x the {trained:,} trained between "
        "evaluations; a smaller --eval-size (or a larger --eval-every) makes this run faster"
    )


def _icl_run(args, variants: list[str], seeds: list[int]) -> int:
    from attnstreams.experiments.icl.train import ICLGrid, ICLTrainConfig, train

    if args.resume and not args.out:
        raise ConfigError("--resume needs --out (the run folder to continue)")
    if args.resume:  # a folder in use or without a checkpoint: refused before the test sets
        new_run_dir(args.out, resume=True, lock=True)
    if args.stop_after is not None:
        check_range("stop_after", args.stop_after, lo=1)
    cfg = ICLTrainConfig(
        steps=args.steps,
        batch=args.batch,
        lr=args.lr,
        weight_decay=args.weight_decay,
        eval_every=args.eval_every,
        eval_size=args.eval_size,
        scaled=args.scaled,
        init=args.init,
        precision=args.precision,
    )
    device = _device(args.device)
    if not args.json and (note := eval_cost_note(cfg)):
        print(note, file=sys.stderr)
    graph = device.type == "cuda" and not args.no_cuda_graph
    grid = ICLGrid(variants, seeds, cfg, device, compile=args.compile, cuda_graph=graph)
    out = new_run_dir(args.out, resume=args.resume, lock=True)
    summary = train(
        grid, out, resume=args.resume, progress=not args.json, stop_after=args.stop_after
    )
    last = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()][
        -len(grid.variants) * len(seeds) :
    ]
    if args.json:
        print(json.dumps(summary | {"out": str(out), "final": last}))
    else:
        for r in last:
            accs = " ".join(f"{k[4:]}={v:.3f}" for k, v in r.items() if k.startswith("acc_"))
            print(f"{r['variant']:>22} seed {r['seed']:<3} step {r['step']}: {accs}")
        print(
            f"{summary['runs']} runs, {summary['wall_s']:.1f} s on {summary['device']}; wrote {out}"
        )
    return 0


def cmd_icl_train(args: argparse.Namespace) -> int:
    """`icl train`: one toy run (a grid of one variant and one seed)."""
    return _icl_run(args, [args.stream], [args.seed])


def cmd_icl_grid(args: argparse.Namespace) -> int:
    """`icl grid`: every variant x seed of the toy experiment at once."""
    return _icl_run(args, _values(args.variants, "--stream"), _seeds(args))


def cmd_icl_report(args: argparse.Namespace) -> int:
    """`icl report`: steps to each threshold, paired statistics and curves."""
    from attnstreams.experiments.icl.report import grid_results, write_report

    thresholds = []
    for t in _values(args.thresholds):
        try:
            thresholds.append(float(t))
        except ValueError:
            raise ConfigError(f"--thresholds takes numbers in (0, 1], got {t!r}") from None
        check_range("threshold", thresholds[-1], lo=0.0, hi=1.0, lo_open=True)
    if not thresholds:
        raise ConfigError("--thresholds needs at least one number in (0, 1]")
    report = write_report(args.run, thresholds=thresholds)
    if args.json:  # the numbers too, not only where they were written
        print(json.dumps({"report": str(report), **grid_results(args.run, tuple(thresholds))}))
    else:
        print(f"report: {report}")
    return 0


def cmd_icl_merge(args: argparse.Namespace) -> int:
    """`icl merge`: grids of the same settings trained in separate jobs, as one folder."""
    from attnstreams.experiments.icl.report import merge_grids

    config = json.loads(merge_grids(args.runs, Path(args.out)).read_text())
    done = {"out": args.out, "variants": config["variants"], "seeds": config["seeds"]}
    if args.json:
        print(json.dumps(done))
    else:
        print(
            f"{len(config['variants'])} variants x {len(config['seeds'])} seeds in {args.out}; "
            f"`attnstreams icl report {args.out}` reports on them"
        )
    return 0


def _lm_args(p: argparse.ArgumentParser, train: bool = True) -> None:
    from attnstreams.experiments.lm.data import DataConfig
    from attnstreams.experiments.lm.train import LMTrainConfig

    d, t = DataConfig(), LMTrainConfig()
    p.add_argument(
        "--preset",
        default=t.preset,
        help="tinystories-8m | gpt2-124m | gpt-1b | tiny, or the modern block (RoPE, RMSNorm, "
        "SwiGLU, GQA): modern-8m | modern-124m | modern-1b | modern-tiny",
    )
    p.add_argument(
        "--init-from",
        default=None,
        help="continue a local transformers model folder (Llama family or GPT-2; needs [hf]) "
        "with --stream added, instead of a preset; saves it back under OUT/hf",
    )
    p.add_argument(
        "--data",
        default=d.data,
        help="generated (offline stories) | tinystories (Hugging Face; needs internet and "
        "[data]) | PATH: .txt (stories separated by <|endoftext|>, or by blank lines with "
        "--separator blank-line), .jsonl/.json (one object a line; --text-field), .parquet, or "
        "a folder of such files",
    )
    p.add_argument("--text-field", default=d.text_field, help="of .jsonl/.parquet records")
    p.add_argument(
        "--separator",
        default=d.separator,
        help="between stories of a .txt file: eot (<|endoftext|>) | blank-line",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="bpe (trained locally) | gpt2 | a folder with a tokenizer.json (default: bpe, or "
        "the --init-from model's)",
    )
    p.add_argument("--vocab-size", type=int, default=d.vocab_size, help="of the local BPE")
    p.add_argument(
        "--train-tokens",
        type=int,
        default=None,
        help="tokens to pretokenise; 0: the whole corpus (default: a corpus file's whole; "
        f"generated: twice what the run reads, at least {GENERATED_FLOOR:,})",
    )
    p.add_argument(
        "--names",
        default=d.names,
        help="original | resampled: every character name replaced in each copy of the train "
        "split; IOI then uses held-out names",
    )
    p.add_argument(
        "--copies", type=int, default=None, help="renamed train copies (default: ceil(--epochs))"
    )
    p.add_argument("--val-tokens", type=int, default=d.val_tokens)
    p.add_argument("--steps", type=int, default=t.steps)
    p.add_argument(
        "--epochs", type=float, default=None, help="passes over the train split (sets --steps)"
    )
    p.add_argument("--batch", type=int, default=t.batch, help="sequences a step, all processes")
    p.add_argument("--block-size", type=int, default=None, help="context (default: the preset's)")
    if train:
        _lm_train_args(p, t)
    else:  # `lm prepare` makes token files: the training settings are not its to take
        unused = argparse.ArgumentParser(add_help=False)
        _lm_train_args(unused, t)
        p.set_defaults(**{a.dest: a.default for a in unused._actions})
    p.add_argument("--config", help="JSON file of option values (flags given here win)")
    p.add_argument("--json", action="store_true")


def _lm_train_args(p: argparse.ArgumentParser, t) -> None:
    """The options of `lm train` and `lm grid` that do not shape the token files."""
    from attnstreams.experiments.lm.evals import IOI_ROUND

    p.add_argument(
        "--residual",
        default=t.residual,
        help="how blocks pass the residual stream on: plain | denseformer (DenseFormer's "
        "depth-weighted average after every block) | denseformer-dK-pP (every K-th earlier "
        "output, a DWA after every P-th block) | hc, dhc, mhc (hyper-connections: static, "
        "dynamic, manifold-constrained; 4 copies of the stream) | hc-nN, dhc-nN, mhc-nN (N "
        "copies) | attnres (Attention Residuals: each sublayer reads a learned softmax over "
        "the embedding and every earlier sublayer output) | attnres-bK (over the embedding and "
        "the sums of blocks of K layers) | mudd (MUDDFormer: each block's query, key, value and "
        "residual inputs are per-token mixtures of the embedding and every earlier block output) "
        "| muddvr (modded-nanogpt's trimmed MUDD: per-token mixtures made after the last two "
        "blocks are added to the stream and to the last block's values)",
    )
    p.add_argument(
        "--grad-accum",
        type=int,
        default=t.grad_accum,
        help="split each process's share of the batch into this many pieces (less memory, "
        "the same step)",
    )
    p.add_argument("--lr", type=float, default=t.lr)
    p.add_argument("--warmup", type=int, default=t.warmup)
    p.add_argument("--weight-decay", type=float, default=t.weight_decay)
    p.add_argument("--grad-clip", type=float, default=t.grad_clip)
    p.add_argument("--dropout", type=float, default=None, help="default: the preset's")
    p.add_argument("--eval-every", type=int, default=t.eval_every)
    p.add_argument(
        "--eval-log",
        type=int,
        default=t.eval_log,
        help="N evaluations at log-spaced steps from --eval-every to the end (dense early, "
        "sparse late) instead of one every --eval-every steps",
    )
    p.add_argument("--eval-batches", type=int, default=t.eval_batches)
    p.add_argument(
        "--ioi-prompts",
        type=int,
        default=t.ioi_prompts,
        help=f"templated IOI prompts, rounded up to whole rounds of {IOI_ROUND} (every "
        "template, both names as the IO, both orders)",
    )
    p.add_argument(
        "--icl-positions",
        default=f"{t.icl_early},{t.icl_late}",
        help="EARLY,LATE: ICL score = loss on a held-out story's token LATE minus token EARLY",
    )
    p.add_argument("--precision", default=t.precision, help="auto|fp32|bf16")
    p.add_argument("--compile", action="store_true")
    p.add_argument(
        "--compile-backend",
        default=t.compile_backend,
        help="with --compile: inductor | aot_eager (traced, run eagerly: a quick check) | eager",
    )
    p.add_argument(
        "--cuda-graphs", action="store_true", help="with --compile: CUDA graphs (one GPU)"
    )
    p.add_argument("--nonfinite", default=t.nonfinite, help="stop|skip a NaN/inf loss step")
    p.add_argument(
        "--checkpoints",
        default=t.checkpoints,
        help="eval: a checkpoint after every evaluation | end: only at the end and when "
        "stopped between evaluations (less disk traffic; a stop during one keeps nothing new)",
    )
    p.add_argument("--parallel", default=t.parallel, help="under torchrun: auto|ddp|fsdp")
    p.add_argument(
        "--ddp-bucket-mb", type=float, default=t.ddp_bucket_mb, help="DDP gradient bucket size"
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu|cuda[:N]; lm grid: a comma list its runs take in turn (cuda:0,...,cuda:7 "
        "with --workers 16: a group of runs a GPU)",
    )
    p.add_argument("--out", help="output folder (default runs/<timestamp>)")


GENERATED_FLOOR = 1_000_000  # generated train tokens at least (a BPE and windows to draw)


def _lm_configs(args, stream: str, seed: int, residual: str | None = None):
    """The token files' and the run's configs from the options; `residual` in place of
    --residual (a grid arm's own)."""
    import math

    from attnstreams.experiments.lm.data import DataConfig
    from attnstreams.experiments.lm.train import LMTrainConfig
    from attnstreams.models.gpt import preset

    train_tokens = args.train_tokens
    if train_tokens is None and args.data == "generated":  # as much as the run will read
        check_range("steps", args.steps, lo=1)
        check_range("batch", args.batch, lo=1)
        if args.epochs is not None:
            raise ConfigError("--epochs needs a finite corpus: give --train-tokens for generated")
        T = args.block_size or preset(args.preset).block_size
        train_tokens = max(GENERATED_FLOOR, 2 * args.steps * args.batch * T)
    copies = args.copies
    if copies is None:
        copies = max(1, math.ceil(args.epochs)) if args.names == "resampled" and args.epochs else 1
    try:
        early, late = (int(v) for v in args.icl_positions.split(","))
    except ValueError:
        raise ConfigError(
            f"--icl-positions must be EARLY,LATE, got {args.icl_positions!r}"
        ) from None
    cfg = LMTrainConfig(
        preset=args.preset,
        stream=stream,
        residual=args.residual if residual is None else residual,
        steps=args.steps,
        epochs=args.epochs,
        batch=args.batch,
        grad_accum=args.grad_accum,
        block_size=args.block_size,
        lr=args.lr,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        dropout=args.dropout,
        eval_every=args.eval_every,
        eval_log=args.eval_log,
        eval_batches=args.eval_batches,
        ioi_prompts=args.ioi_prompts,
        icl_early=early,
        icl_late=late,
        seed=seed,
        precision=args.precision,
        compile=args.compile,
        compile_backend=args.compile_backend,
        cuda_graphs=args.cuda_graphs,
        nonfinite=args.nonfinite,
        checkpoints=args.checkpoints,
        parallel=args.parallel,
        ddp_bucket_mb=args.ddp_bucket_mb,
        init_from=args.init_from,
    )
    tokenizer = args.tokenizer or args.init_from or "bpe"
    data = DataConfig(  # after the model settings: a bad --init-from is named first
        data=args.data,
        tokenizer=tokenizer,
        vocab_size=args.vocab_size,
        train_tokens=train_tokens or None,
        val_tokens=args.val_tokens,
        text_field=args.text_field,
        separator=args.separator,
        names=args.names,
        copies=copies,
    )
    return data, cfg


def _lm_train_ranked(args, data, cfg, d, device):
    """The training part of `lm train` on one rank: token files (rank 0 makes them), train."""
    from attnstreams.experiments.lm.data import prepare_data
    from attnstreams.experiments.lm.train import LMTrainer, train, with_epochs
    from attnstreams.run import parallel

    if d.is_main:
        _check_corpus_unless_prepared(data, args.data_dir, args.out)
        # made and checked writable before any data work
        new = not (args.out and Path(args.out).exists())
        out = new_run_dir(args.out, resume=args.resume, lock=True)  # before its token files
    elif args.out:
        out = Path(args.out)
    else:
        raise ConfigError("under torchrun, give every process the same --out")
    data_dir = Path(args.data_dir) if args.data_dir else out / "data"
    if d.is_main:
        try:
            prepare_data(data, data_dir, progress=not args.json)
        except (ConfigError, OSError):  # refused data: a run folder made for it goes too
            if new and not any(p.name != LOCK for p in out.iterdir()):
                shutil.rmtree(out, ignore_errors=True)
            raise
    parallel.barrier(d)
    data_dir = prepare_data(data, data_dir, progress=False)
    trainer = LMTrainer(with_epochs(cfg, data_dir), data_dir, device, d)
    summary = train(
        trainer, out, resume=args.resume, progress=not args.json, stop_after=args.stop_after
    )
    return summary, out


#: `lm train` options that are LMTrainConfig fields of the same name.
_TRAIN_KEYS = (
    "preset", "stream", "residual", "steps", "epochs", "batch", "grad_accum", "block_size", "lr",
    "warmup", "weight_decay", "grad_clip", "dropout", "eval_every", "eval_log", "eval_batches",
    "ioi_prompts", "seed", "precision", "compile", "compile_backend", "cuda_graphs", "nonfinite",
    "parallel", "ddp_bucket_mb", "init_from", "checkpoints",
)  # fmt: skip
_DATA_KEYS = ("data", "tokenizer", "vocab_size", "val_tokens", "text_field", "separator")
_DATA_KEYS += ("names", "copies")


def _saved_run_defaults(out: str | None) -> dict:
    """`lm train --resume`: the run's own settings (its config.json) as the options'
    defaults, so that a resume needs only --out; options given still win, and one that
    changes the run is refused before any work (`_check_resume`)."""
    if not out:
        raise ConfigError("--resume needs --out, the folder of the run to continue")
    path = Path(out) / "config.json"
    if not path.is_file():
        return {}  # the run folder's own check names what is missing
    try:
        saved = json.loads(path.read_text())
        c, data = saved["config"], saved.get("data") or {}
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(f"{path} is not the config of an `lm train` run") from None
    defaults = {k: c[k] for k in _TRAIN_KEYS if k in c}
    if "icl_early" in c:
        defaults["icl_positions"] = f"{c['icl_early']},{c['icl_late']}"
    defaults |= {k: data[k] for k in _DATA_KEYS if k in data}
    if data:
        defaults["train_tokens"] = data.get("train_tokens") or 0  # 0: the whole corpus
    if saved.get("data_dir"):
        defaults["data_dir"] = saved["data_dir"]
    return defaults


def _check_resume(out: str, data, cfg) -> None:
    """Refuse, before any work, a resume whose options change the run (the speed-only
    settings may change)."""
    from attnstreams.experiments.lm.train import run_defining

    path = Path(out) / "config.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    changed = differences(run_defining(saved["config"]), run_defining(asdict(cfg)))
    if saved.get("data"):
        changed += differences(saved["data"], asdict(data))
    if changed:
        raise ConfigError(
            f"{out} was trained with other settings ({'; '.join(changed)}); a resume takes the "
            "run's own: leave those options out"
        )


def _check_corpus_unless_prepared(data, data_dir: str | None, out: str | None) -> None:
    """Read the corpus's first document before any folder is made, unless its token files
    (--data-dir, else OUT/data) already exist: a refused corpus leaves nothing behind."""
    folder = data_dir or (Path(out) / "data" if out else None)
    if folder is None or not (Path(folder) / "data_config.json").is_file():
        check_corpus(data.data, data.text_field, data.separator)


def cmd_lm_prepare(args: argparse.Namespace) -> int:
    """Tokenise a corpus once into a folder that `lm train/grid --data-dir` reuse."""
    from attnstreams.experiments.lm.data import prepare_data

    data, _ = _lm_configs(args, "none", 0)
    _check_corpus_unless_prepared(data, args.data_dir, None)
    out = prepare_data(data, Path(args.data_dir), progress=not args.json)
    meta = {s: json.loads((out / f"{s}.json").read_text()) for s in ("train", "validation")}
    if args.json:
        print(json.dumps({"data_dir": str(out), **meta}))
    else:
        t, v = meta["train"], meta["validation"]
        print(
            f"train {t['tokens']:,} tokens ({t['bytes']:,} bytes), validation {v['tokens']:,} "
            f"tokens; vocabulary {t['vocab_size']:,}; wrote {out}"
        )
    return 0


def cmd_lm_train(args: argparse.Namespace) -> int:
    """One process, or one of N under `torchrun --nproc_per_node N` (data parallel)."""
    from attnstreams.run import parallel

    data, cfg = _lm_configs(args, args.stream, args.seed)
    if args.resume:
        _check_resume(args.out, data, cfg)
    if args.stop_after is not None:
        check_range("stop_after", args.stop_after, lo=1)
    if args.collective_timeout is not None:
        check_range("collective_timeout", args.collective_timeout, lo=1.0, hi=86400.0)
    d, device = parallel.init_distributed(_device(args.device), args.collective_timeout)
    try:
        with parallel.report_lost_ranks(d, Path(args.out) / CHECKPOINT):
            summary, out = _lm_train_ranked(args, data, cfg, d, device)
    except BaseException:
        parallel.shutdown(d, ok=False)
        raise
    parallel.shutdown(d)
    if not d.is_main:
        return 0
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    if args.json:
        print(json.dumps(summary | {"out": str(out), "final": last, "processes": d.world}))
    else:
        print(
            f"step {last['step']}: val_loss {last['val_loss']:.3f}, IOI accuracy "
            f"{last.get('ioi_accuracy', float('nan')):.3f}, induction score "
            f"{last['induction_score']:.3f}; {summary['tokens_per_s']:,.0f} tokens/s; wrote {out}"
        )
    return 0


def cmd_lm_grid(args: argparse.Namespace) -> int:
    """`lm grid`: every arm x seed, one after another or in parallel processes."""
    from attnstreams.experiments.lm.arms import parse_arm
    from attnstreams.experiments.lm.grid import run_grid
    from attnstreams.experiments.lm.stack import check_stack_config

    arms = _values(args.stream, "--stream")
    seeds = _seeds(args)
    devices = [_device(d) for d in _values(args.device, "--device")]
    check_range("workers", args.workers, lo=1, hi=256)
    check_range("stack", args.stack, lo=1, hi=MAX_SEEDS)
    data, cfg = _lm_configs(args, "none", args.seed)  # the grid's; each arm sets its own model
    for arm in arms:  # validate every arm before any work
        stream, residual = parse_arm(arm, args.residual)
        arm_cfg = _lm_configs(args, stream, args.seed, residual)[1]
        if args.stack > 1:
            check_stack_config(arm_cfg)
    _check_corpus_unless_prepared(data, args.data_dir, args.out)
    out = new_run_dir(args.out)
    summaries = run_grid(
        arms,
        seeds,
        data,
        cfg,
        out,
        devices,
        progress=not args.json,
        real_eval=args.real_eval,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        workers=args.workers,
        stack=args.stack,
        stack_kernel=args.stack_kernel,
        warm=args.warm_compile,
    )
    from attnstreams.experiments.lm.report import write_report

    report = write_report(out)
    print(
        json.dumps({"out": str(out), "report": str(report), "runs": summaries})
        if args.json
        else f"{len(summaries)} runs; report: {report}"
    )
    return 0


def _trained_model(args):
    """A checkpoint's model (its own architecture, eval mode) and the tokenizer saved beside it."""
    from attnstreams.data.tokenizer import load_tokenizer
    from attnstreams.experiments.lm.weights import load_model

    device = _device(args.device)
    ckpt = Path(args.checkpoint)
    if ckpt.is_dir():  # a run's folder: its checkpoint
        if not (ckpt / CHECKPOINT).is_file():
            raise ConfigError(f"{ckpt} is a folder without a {CHECKPOINT}: give a run's folder")
        ckpt = ckpt / CHECKPOINT
    model, meta = load_model(ckpt, device)
    tok = load_tokenizer(ckpt.parent)
    if tok.vocab_size != meta["vocab_size"]:
        raise ConfigError(f"the tokenizer beside {ckpt} does not match the checkpoint")
    return device, ckpt, model, meta, tok


def cmd_lm_eval(args: argparse.Namespace) -> int:
    """`lm eval`: a checkpoint's held-out loss and behavioural metrics."""
    from attnstreams.experiments.lm.evals import behaviour_metrics, heldout_loss
    from attnstreams.experiments.lm.train import ioi_set_for

    check_range("ioi_prompts", args.ioi_prompts, lo=1)
    device, ckpt, model, meta, tok = _trained_model(args)
    ioi_set, names = ioi_set_for(ckpt.parent, tok, args.ioi_prompts)
    res = {
        "checkpoint": str(ckpt),
        "step": meta["step"],
        "stream": meta["model"]["stream"],
        "residual": meta["model"].get("residual", "plain"),  # older checkpoints: plain
        "ioi_names": len(names),
    }
    res |= behaviour_metrics(model, tok, device, ioi_set)
    res.pop("ioi_by_template", None)
    if args.data:  # the train split's loss is no held-out loss: named for what it is
        res["train_loss" if args.split == "train" else "heldout_loss"] = heldout_loss(
            model,
            tok,
            args.data,
            model.cfg.block_size,
            device,
            text_field=args.text_field,
            split=args.split,
            separator=args.separator,
        )
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:>24}: {v:.4f}" if isinstance(v, float) else f"{k:>24}: {v}")
    return 0


def cmd_lm_sample(args: argparse.Namespace) -> int:
    """`lm sample`: text from a checkpoint."""
    device, _, model, _, tok = _trained_model(args)
    check_range("max_new_tokens", args.max_new_tokens, lo=1)
    check_range("temperature", args.temperature, lo=0.0)
    check_range("top_k", args.top_k, lo=1)
    prompt = tok.encode(args.prompt)
    if not prompt:
        raise ConfigError("--prompt is empty: give at least one character to continue from")
    check_range("max_new_tokens", args.max_new_tokens, hi=MAX_NEW_TOKENS)
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    g = torch.Generator(device=device).manual_seed(args.seed)
    # past the context the window slides: each token sees the block_size tokens before it
    out = model.generate(ids, args.max_new_tokens, args.temperature, args.top_k, g)
    text = tok.decode(out[0].tolist())
    print(json.dumps({"text": text}) if args.json else text)
    return 0


def cmd_lm_report(args: argparse.Namespace) -> int:
    """`lm report`: what emerged in a grid, and when, compared by seed."""
    from attnstreams.experiments.lm.report import write_report

    out = Path(args.out) if args.out else None
    report = write_report(
        args.run, thresholds=args.thresholds, cost=args.cost, out=out, only=args.arms
    )
    print(json.dumps({"report": str(report)}) if args.json else f"report: {report}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """`reproduce`: both experiments and the report (the demo with --quick)."""
    from attnstreams.experiments.reproduce import reproduce, reproduction_results

    report = reproduce(args.out, quick=args.quick, seed=args.seed)
    if args.json:  # the numbers too, not only where they were written
        print(json.dumps({"report": str(report), **reproduction_results(report.parent)}))
    else:
        print(f"report: {report}")
    return 0


def build_parser() -> Parser:
    """Every verb and its options."""
    parser = Parser(
        prog="attnstreams",
        description="AMICL and residual attention streams (Burns, Fukai, Earls; arXiv 2412.15113).",
    )
    parser.add_argument("--version", action="version", version=f"attnstreams {__version__}")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: OMP_NUM_THREADS if set, else min(4, cores); "
        "on a shared machine, 1 per process avoids oversubscription)",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{amicl,icl,lm,reproduce}")

    amicl = verbs.add_parser("amicl", help="the associative-memory ICL model (paper section 1)")
    sub = amicl.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="accuracy at one setting")
    _amicl_args(p, trials=1000)
    p.set_defaults(func=cmd_amicl_run)
    p = sub.add_parser("sweep", help="accuracy over one parameter: CSV and PNG")
    _amicl_args(p, trials=1000)
    p.add_argument(
        "--over", required=True, choices=["a", "length", "dim", "classes", "eps", "beta"]
    )
    p.add_argument("--values", required=True, nargs="+", help="values, comma- or space-separated")
    p.add_argument("--out", help="output folder (default runs/<timestamp>)")
    p.set_defaults(func=cmd_amicl_sweep)
    p = sub.add_parser("attention", help="score/softmax/argmax maps of one trial (PNG)")
    _amicl_args(p, trials=None)
    p.add_argument("--out", help="output folder (default runs/<timestamp>)")
    p.set_defaults(func=cmd_amicl_attention)

    icl = verbs.add_parser("icl", help="in-context classification with ToyICL (paper section 3)")
    sub = icl.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train", help="train one ToyICL run")
    p.add_argument("--stream", default="none", help=STREAM_HELP)
    p.add_argument("--seed", type=int, default=0)
    _icl_args(p)
    p.set_defaults(func=cmd_icl_train, config_parser=p)
    p = sub.add_parser("grid", help="variants x seeds, trained together on one device")
    p.add_argument(  # --stream as in `lm grid`; --variants, its older name, still works
        "--stream",
        "--variants",
        dest="variants",
        metavar="STREAMS",
        default="none,value,key,query",
        help=f"comma-separated; {STREAM_HELP}",
    )
    p.add_argument("--seeds", type=int, default=10, help="number of seeds")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    _icl_args(p)
    p.set_defaults(func=cmd_icl_grid, config_parser=p)
    p = sub.add_parser("report", help="statistics and figures of a grid folder")
    p.add_argument("run", help="folder written by `icl grid`")
    p.add_argument("--thresholds", default="0.5,0.95", help="accuracy thresholds")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_icl_report)
    p = sub.add_parser(
        "merge", help="grids of the same settings trained apart, as one folder (paired by seed)"
    )
    p.add_argument("runs", nargs="+", help="folders written by `icl grid`")
    p.add_argument("--out", required=True, help="new folder for the merged grid")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_icl_merge)

    lm = verbs.add_parser("lm", help="language models with streams, IOI (paper section 4)")
    sub = lm.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="tokenise a corpus once (train the BPE) into --data-dir")
    p.add_argument("--data-dir", required=True, help="folder for the token files")
    _lm_args(p, train=False)
    p.set_defaults(func=cmd_lm_prepare, config_parser=p)
    p = sub.add_parser("train", help="train one GPT language model")
    p.add_argument("--stream", default="none", help=STREAM_HELP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="token files to (re)use (default: OUT/data)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    _stop_after_arg(p)
    p.add_argument(
        "--collective-timeout",
        type=float,
        default=None,
        help="under torchrun: seconds a collective waits for the other processes before the "
        "run fails (PyTorch's default: 600 for NCCL, 1800 for gloo)",
    )
    _lm_args(p)
    p.set_defaults(func=cmd_lm_train, config_parser=p)
    p = sub.add_parser("grid", help="streams x seeds, paired by seed; resumable; writes a report")
    p.add_argument(  # --variants: the name `icl grid` had
        "--stream", "--variants", dest="stream", metavar="ARMS", default="none,value",
        help=f"comma-separated arms: a stream, a residual (--residual's names; no stream), or "
        f"STREAM+RESIDUAL (e.g. none,value,denseformer,value+hc); streams: {STREAM_HELP}",
    )  # fmt: skip
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument(
        "--real-eval", help="a corpus whose validation split gives a held-out loss at the end"
    )
    p.add_argument("--data-dir", help="token files to (re)use (default: OUT/data)")
    p.add_argument(
        "--workers", type=int, default=1, help="jobs at once, one process each (fills a GPU)"
    )
    p.add_argument(
        "--warm-compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --compile and --workers: an arm of several jobs compiles its step once "
        "first, and its jobs load it from torch.compile's on-disk cache",
    )
    p.add_argument(
        "--stack",
        type=int,
        default=1,
        help="train up to this many seeds of a stream as one batched computation, one job "
        "(each run still its own folder and checkpoint; with dropout, other masks)",
    )
    p.add_argument(
        "--stack-kernel",
        choices=("math", "flash", "efficient", "cudnn"),
        default="math",
        help="SDPA kernel a stack attends with on CUDA (speed only; math: known to work "
        "under vmap and compile)",
    )
    _lm_args(p)
    p.set_defaults(func=cmd_lm_grid, config_parser=p)
    p = sub.add_parser("eval", help="IOI, induction and held-out loss of a checkpoint")
    p.add_argument("checkpoint", help="a checkpoint.safetensors, or the run folder holding it")
    p.add_argument("--data", help="corpus for a held-out loss (tokenised with the run's tokenizer)")
    p.add_argument(
        "--split",
        default="validation",
        help="validation (the corpus's held-out split) | all (a local file held out as a "
        "whole) | train (the split trained on: its loss, to compare, not a held-out one)",
    )
    p.add_argument("--text-field", default="text", help="of .jsonl/.parquet records")
    p.add_argument(
        "--separator", default="eot", help="between stories of a .txt file: eot | blank-line"
    )
    p.add_argument("--ioi-prompts", type=int, default=600)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lm_eval)
    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("checkpoint", help="a checkpoint.safetensors, or the run folder holding it")
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=50, help="sample among the k likeliest (>= 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lm_sample)
    p = sub.add_parser("report", help="curves and paired statistics of an lm grid folder")
    p.add_argument(
        "run",
        nargs="+",
        help="an `lm grid` folder, or several trained apart with the same settings (each arm "
        "and seed once; e.g. new arms beside a grid's baseline runs)",
    )
    p.add_argument("--out", help="folder for the report (default: the first folder)")
    p.add_argument(
        "--arms", default="", help="only these arms, in this order (default: every arm found)"
    )
    p.add_argument(
        "--thresholds",
        default="",
        help="abilities to time besides the paper's: KEY>VALUE,... (e.g. induction_score>0.5), "
        "or 'pilot' (those fixed from results/lm-long/pilot)",
    )
    p.add_argument(
        "--cost",
        help="add held-out loss at equal GPU time, from each arm's step time in this "
        "`benchmarks/lm_throughput.py --json` file (the runs' preset)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lm_report)

    p = verbs.add_parser("reproduce", help="run the paper's experiments and write a report")
    p.add_argument("--quick", action="store_true", help="CPU-sized version (minutes)")
    p.add_argument("--out", help="output folder (default runs/<timestamp>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_reproduce)
    return parser


NOT_IN_CONFIG = {"config", "resume", "json", "out", "help"}


def _config_defaults(parser: argparse.ArgumentParser, path: str) -> dict:
    """A JSON config file's settings as defaults of `parser`: keys are option names (with - or
    _), checked against the options and their types; flags on the command line still win."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config {path} is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a JSON object")
    actions = {a.dest: a for a in parser._actions if a.dest not in NOT_IN_CONFIG}
    out = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            raise ConfigError(f"config {path}: unknown key {key!r}")
        action = actions[dest]
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise ConfigError(f"config {path}: {key} must be true or false, got {value!r}")
        elif value is not None:
            kind = action.type or str
            if isinstance(value, (bool, dict, list)) or (
                kind is str and not isinstance(value, str)
            ):
                raise ConfigError(f"config {path}: {key} must be {kind.__name__}, got {value!r}")
            try:
                value = kind(value)
            except (TypeError, ValueError, OverflowError):  # OverflowError: int(Infinity)
                raise ConfigError(
                    f"config {path}: {key} must be {kind.__name__}, got {value!r}"
                ) from None
        out[dest] = value
    return out


def _one_line(text: str) -> str:
    """An error message on one line whatever a user-given name holds (newlines and other
    control characters escaped)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _set_threads(threads: int | None) -> None:
    """Small models gain little from many threads, and on a busy machine torch's default (one
    per core) oversubscribes it: a few threads unless told otherwise."""
    import os

    if threads is not None:
        check_range("threads", threads, lo=1, hi=1024)
    elif os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    else:
        threads = min(4, os.cpu_count() or 1)
    torch.set_num_threads(max(1, threads))


def main(argv: list[str] | None = None) -> int:
    """The `attnstreams` command: 0 done, 2 bad input (one line), 1 a run that failed,
    128 + the signal for one stopped by a signal (its checkpoint kept)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        resumed = args.func is cmd_lm_train and args.resume
        if resumed:  # the run's settings, then --config, then the options given
            args.config_parser.set_defaults(**_saved_run_defaults(args.out))
        if getattr(args, "config", None):
            args.config_parser.set_defaults(**_config_defaults(args.config_parser, args.config))
        if resumed or getattr(args, "config", None):
            args = parser.parse_args(argv)
        _set_threads(args.threads)
        return args.func(args)
    except ConfigError as e:
        print(f"attnstreams: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except TrainingInterrupted as e:
        print(f"attnstreams: {e}", file=sys.stderr)
        return 128 + e.signum
    except NonFiniteLoss as e:
        print(f"attnstreams: error: {e}", file=sys.stderr)
        return 1
    except RankLost as e:
        e.say()
        return 1
    except torch.OutOfMemoryError:
        print(
            "attnstreams: error: out of GPU memory; nothing of the failed step was saved (the "
            "last checkpoint is kept): try a smaller --batch, or --grad-accum N to take the "
            "same batch in N pieces",
            file=sys.stderr,
        )
        return 1
    except OSError as e:
        print(
            f"attnstreams: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("attnstreams: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
