"""Data parallelism through torch.distributed: started by `torchrun`, one process a device.

Each rank computes its slice of every global batch (the batch size in the configs is global),
and DDP or FSDP averages the gradients, so N processes follow the same loss curve as one
process with the same global batch. Rank 0 alone writes metrics, checkpoints (unsharded, so
they load on one device) and the progress bar.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from attnstreams.run.checkpoint import saved_step
from attnstreams.run.config import ConfigError


@dataclass(frozen=True)
class Dist:
    """This process's place in the data-parallel group (the defaults: a single process)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one process that writes files and the progress bar."""
        return self.rank == 0

    def rows(self, global_batch: int) -> slice:
        """This rank's rows of a global batch."""
        if global_batch % self.world:
            raise ConfigError(
                f"batch ({global_batch}) must be divisible by the {self.world} processes"
            )
        n = global_batch // self.world
        return slice(self.rank * n, (self.rank + 1) * n)


def init_distributed(
    device: torch.device, timeout_s: float | None = None
) -> tuple[Dist, torch.device]:
    """Join the process group torchrun describes (gloo on CPU, NCCL on GPUs); single process
    otherwise. Returns the rank layout and this rank's device.

    timeout_s: how long a collective may wait for the other ranks before it fails (None:
    PyTorch's default, 10 minutes for NCCL, 30 for gloo). Every rank also learns where each
    other rank runs, so that a failed collective can name the rank that died (`lost_ranks`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = None if timeout_s is None else timedelta(seconds=timeout_s)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    _PEERS[:] = [None] * world
    dist.all_gather_object(_PEERS, _identity(os.getpid()))
    return Dist(rank, world, local), device


# Each rank's (host, pid, start time) in rank order, gathered when the group was joined.
_PEERS: list = []


def _start_time(pid: int) -> str | None:
    """When process `pid` started (Linux's /proc, in clock ticks since boot); None once it has
    exited (a zombie counts as exited). Elsewhere: "alive" while the pid exists."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        if Path("/proc/self/stat").exists():
            return None  # Linux, and the process is gone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return "alive"
    return None if fields[0] in ("Z", "X") else fields[19]


def _identity(pid: int) -> tuple[str, int, str | None]:
    return socket.gethostname(), pid, _start_time(pid)


def lost_ranks(d: Dist, wait_s: float = 5.0) -> list[tuple[int, int]]:
    """(rank, pid) of each rank on this host whose process has exited since the group was
    joined (a pid reused by another process does not count as alive), waiting up to wait_s
    for one: a dead peer's sockets close while its process is still exiting. Ranks on other
    hosts cannot be seen from here and are not listed."""
    host = socket.gethostname()
    deadline = time.monotonic() + wait_s
    while True:
        lost = [
            (r, pid)
            for r, (h, pid, started) in enumerate(_PEERS)
            if r != d.rank and h == host and _start_time(pid) != started
        ]
        if lost or time.monotonic() > deadline:
            return lost
        time.sleep(0.05)


class RankLost(Exception):
    """Another rank of the group died; this one stops too (its last checkpoint is whole)."""

    def __init__(self, lost: list[tuple[int, int]], world: int, checkpoint: Path) -> None:
        who = ", ".join(f"rank {r} of {world} (process {pid})" for r, pid in lost)
        step = saved_step(checkpoint)
        kept = (
            f"the last good checkpoint is {checkpoint} (step {step}): continue with --resume"
            if step is not None
            else "no checkpoint was written yet"
        )
        super().__init__(f"{who} died, so this run stopped too; {kept}")

    _said = False
    _saying = threading.Lock()

    def say(self) -> None:
        """Print the one-line report, once a process whichever thread asks first."""
        with RankLost._saying:
            if not RankLost._said:
                print(f"attnstreams: error: {self}", file=sys.stderr, flush=True)
                RankLost._said = True


@contextlib.contextmanager
def report_lost_ranks(d: Dist, checkpoint: Path, grace_s: float = 10.0) -> Iterator[None]:
    """Around a run of several processes: a collective that fails because another rank of this
    host died becomes `RankLost`, which names that rank and the last good checkpoint.

    torchrun SIGTERMs the survivors as soon as one rank dies, racing the survivor's own failed
    collective. A SIGTERM that comes after a rank died is therefore ignored, here and for the
    rest of this process, so that the report is whole. From that SIGTERM, or from the failed
    collective, or from a watching thread seeing the dead rank (the main thread may be stuck
    where no handler runs), the process has grace_s to end: should it still be running then
    (stuck in a collective that never returns, or in leaving the group), the report is printed
    from another thread, once, and the process exits 1 (torchrun would SIGKILL it at 30 s). Any
    other SIGTERM does what it did before: the handler it replaced runs (by default the
    process ends)."""
    if d.world == 1 or threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.getsignal(signal.SIGTERM)
    before = signal.SIG_DFL if before is None else before

    def give_up() -> None:
        RankLost(lost_ranks(d, wait_s=0), d.world, checkpoint).say()  # unless already said
        os._exit(1)

    deadline = threading.Timer(grace_s, give_up)
    deadline.daemon = True
    arming = threading.Lock()

    def arm() -> None:
        """From now on, whatever the main thread is stuck in, the process ends within grace_s."""
        with arming:
            if deadline.ident is None:  # not started yet
                deadline.start()

    done = threading.Event()

    def watch() -> None:
        """A dead peer seen from a thread: the main thread may be stuck in a collective that
        neither fails nor returns to Python, where no signal handler runs. (A peer cannot end
        normally while this one is inside: a run ends with a barrier, `shutdown`.)"""
        while not done.wait(0.5):
            if lost_ranks(d, wait_s=0):
                arm()
                return

    def on_term(signum: int, frame) -> None:
        if lost_ranks(d, wait_s=0):
            arm()
        else:
            signal.signal(signum, before)
            signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=watch, name="lost-ranks", daemon=True).start()
    try:
        yield
    except RuntimeError as e:
        lost = lost_ranks(d)
        if not lost:
            raise
        arm()  # leaving the group of a dead rank, or the interpreter's exit, can stall
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise RankLost(lost, d.world, checkpoint) from e
    finally:
        done.set()
        if signal.getsignal(signal.SIGTERM) is on_term:
            signal.signal(signal.SIGTERM, before)


def wrap(
    model: torch.nn.Module, d: Dist, device: torch.device, mode: str = "ddp", bucket_mb: float = 25
) -> torch.nn.Module:
    """DDP (a replica a rank) or FSDP (`fully_shard` each block, then the root: parameters,
    gradients and optimizer state sharded across ranks, for models that do not fit one GPU).
    Returns what the training step calls; FSDP shards `model` in place.

    bucket_mb: DDP's gradient bucket size (PyTorch's default, 25). Compiled, Dynamo splits the
    graph at every bucket; fewer, larger buckets fuse more (BENCHMARKS.md, issue 7)."""
    if d.world == 1:
        return model
    if mode == "fsdp":
        try:  # public from torch 2.6; the composable API before
            from torch.distributed.fsdp import fully_shard
        except ImportError:  # pragma: no cover
            from torch.distributed._composable.fsdp import fully_shard

        # Newer FSDP2 warns about every block output that is a view, against a later in-place
        # op on it. The stream's carry is one (a head split of the projection), and it is only
        # ever read out of place (streams.py, `mix`), so the warning is noise here.
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view")
        for block in model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    cuda = device.type == "cuda"
    ids = [device.index] if cuda else None
    return DistributedDataParallel(model, device_ids=ids, bucket_cap_mb=bucket_mb)


@contextlib.contextmanager
def grad_sync(wrapped: torch.nn.Module, model: torch.nn.Module, sync: bool) -> Iterator[None]:
    """Around one forward and backward of a gradient-accumulation step: sync=False keeps this
    backward's gradients local (DDP's `no_sync`; FSDP: no reduce-scatter), and the backward
    with sync=True then reduces the sum of them all at once. One process: nothing to do."""
    if sync:
        yield
    elif isinstance(wrapped, DistributedDataParallel):
        with wrapped.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def layout(forward: torch.nn.Module, model: torch.nn.Module) -> tuple[str, int]:
    """What `wrap` built, read off the objects rather than the flags: "fsdp" (parameters are
    sharded DTensors), "ddp" or "none", and how many parameter elements this rank holds."""
    params = list(model.parameters())
    # A parameter can be a DTensor only once its module is loaded: a run without FSDP does
    # not pay for importing it (with FSDP's state-dict functions, ~0.6 s at every start).
    loaded = [sys.modules.get(m) for m in ("torch.distributed.tensor", "torch.distributed._tensor")]
    dtensor = tuple(m.DTensor for m in loaded if hasattr(m, "DTensor"))  # _tensor: torch 2.4
    local = sum(p.to_local().numel() if isinstance(p, dtensor) else p.numel() for p in params)
    if any(isinstance(p, dtensor) for p in params):
        return "fsdp", local
    return ("ddp" if isinstance(forward, DistributedDataParallel) else "none"), local


def _full() -> tuple:
    """torch.distributed.checkpoint's state-dict functions and the options for unsharded
    state on the CPU (imported when first needed: FSDP runs only)."""
    from torch.distributed.checkpoint import state_dict

    return state_dict, state_dict.StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state(
    model: torch.nn.Module, opt: torch.optim.Optimizer, sharded: bool
) -> tuple[dict, list[dict]]:
    """Unsharded model state dict and optimizer state per parameter (in param_groups order),
    so checkpoints load on one device whatever wrote them. Collective under FSDP."""
    params = [p for g in opt.param_groups for p in g["params"]]
    if not sharded:
        return model.state_dict(), [opt.state.get(p, {}) for p in params]
    sd, full = _full()
    msd = sd.get_model_state_dict(model, options=full)
    osd = sd.get_optimizer_state_dict(model, opt, options=full)
    if not osd:  # with cpu_offload only rank 0 receives the gathered state (and writes it)
        return msd, []
    names = [n for g in osd["param_groups"] for n in g["params"]]
    return msd, [osd["state"].get(n, {}) for n in names]


def load_full_state(
    model: torch.nn.Module, opt: torch.optim.Optimizer, model_sd: dict, opt_states: list[dict]
) -> None:
    """The inverse of full_state for a sharded model (every rank reads the full tensors)."""
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [
        {
            **{k: v for k, v in g.items() if k != "params"},
            "params": [names[id(p)] for p in g["params"]],
        }
        for g in opt.param_groups
    ]
    order = [n for g in groups for n in g["params"]]
    osd = {
        "state": {n: st for n, st in zip(order, opt_states, strict=True) if st},
        "param_groups": groups,
    }
    sd, full = _full()
    sd.set_model_state_dict(model, model_sd, options=full)
    sd.set_optimizer_state_dict(model, opt, osd, options=full)


def mean(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Mean over ranks (a copy)."""
    t = t.detach().clone()
    if d.world > 1:
        dist.all_reduce(t)
        t /= d.world
    return t


def any_rank(flag: bool, d: Dist, device: torch.device) -> bool:
    """True on every rank if it is true on any (so all ranks stop at the same step)."""
    if d.world == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(t: torch.Tensor, d: Dist) -> list[torch.Tensor]:
    """Every rank's value of a small tensor, in rank order, on every rank ([t] alone)."""
    if d.world == 1:
        return [t]
    out: list = [None] * d.world
    dist.all_gather_object(out, t)  # any device and backend; for small tensors (RNG states)
    return out


def barrier(d: Dist) -> None:
    """Wait until every rank gets here (nothing in a single process)."""
    if d.world > 1:
        dist.barrier()


def shutdown(d: Dist, ok: bool = True) -> None:
    """Leave the process group (after the others, when all went well): a process that exits
    with it still open can abort in the backend's threads."""
    if d.world > 1 and dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()
