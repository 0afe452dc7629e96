"""Run folders and metric files written as the work goes (CSV/JSONL, flushed per row)."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from attnstreams.run import checkpoint
from attnstreams.run.config import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, TextIO


class LineProgress:
    """Progress for output that is not a terminal (a log file, a batch job): a whole line
    every `interval` seconds and at the end, where tqdm's redrawn bar writes nothing useful."""

    def __init__(self, total: int | None = None, desc: str = "", unit: str = "it",
                 initial: int = 0, interval: float = 30.0,
                 file: TextIO | None = None) -> None:  # fmt: skip
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.interval, self.file = interval, file or sys.stderr
        self.start = self.last = time.monotonic()
        self.start_n, self.postfix = initial, ""
        self._lock = threading.Lock()  # updated from worker threads (amicl's chunks)

    def update(self, n: int = 1) -> None:
        """Count n more units, printing a line if `interval` seconds passed since the last."""
        with self._lock:
            self.n += n
            now = time.monotonic()
            due = now - self.last >= self.interval
            if due:
                self.last = now
        if due:
            self._line(now)

    def set_postfix(self, **kw: Any) -> None:
        """Show `key=value` pairs at the end of the following lines, as tqdm does."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def _line(self, now: float) -> None:
        rate = (self.n - self.start_n) / max(now - self.start, 1e-9)
        of = f"/{self.total:,}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        tail = f", {self.postfix}" if self.postfix else ""
        print(
            f"{self.desc}: {self.n:,}{of} {self.unit}{pct}, {now - self.start:.0f} s, "
            f"{rate:,.1f} {self.unit}/s{tail}",
            file=self.file,
            flush=True,
        )

    def close(self) -> None:
        """Print a final line, if anything was counted."""
        if self.n != self.start_n:
            self._line(time.monotonic())

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: int | None = None, desc: str = "", unit: str = "it",
                 enabled: bool = True, initial: int = 0) -> tqdm | LineProgress:  # fmt: skip
    """tqdm on a terminal; on anything else a line every 30 s (LineProgress); or nothing."""
    if not enabled:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial)
    return LineProgress(total, desc, unit, initial)


def new_run_dir(
    out: str | Path | None, root: str | Path = "runs", resume: bool = False, lock: bool = False
) -> Path:
    """`out` if given, else runs/<timestamp>/; created, and checked writable up front. With
    resume the folder must already hold a checkpoint: nothing is created. lock: this process
    takes the folder's lock first (`hold_lock`): a folder in use is refused before anything."""
    path = Path(out) if out else Path(root) / time.strftime("%Y%m%d-%H%M%S")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a folder")
    if lock and path.is_dir():
        hold_lock(path)
    if resume and not (path / CHECKPOINT).is_file():
        raise ConfigError(f"nothing to resume: {path / CHECKPOINT} does not exist")
    path.mkdir(parents=True, exist_ok=True)
    if lock:
        hold_lock(path)
    probe = path / f".write-test-{os.getpid()}"
    probe.write_text("")
    probe.unlink()
    return path


def refuse_overwrite(out: str | Path | None, *names: str) -> None:
    """Refuse, before any work, an --out that already holds one of a command's outputs (as a
    training run refuses a folder holding a run): nothing is overwritten silently."""
    if out is None:
        return
    held = [n for n in names if (Path(out) / n).exists()]
    if held:
        raise ConfigError(
            f"{out} already holds {', '.join(held)}: choose another --out or remove them"
        )


CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"


LOCK = ".lock"
_HELD: dict[str, int] = {}  # folder -> the open lock file this process holds


def hold_lock(folder: str | Path) -> None:
    """Hold `folder`'s lock for the rest of this process: a second process pointed at the
    folder is refused at once, with the holder's pid. The lock is the kernel's (flock on
    `folder/.lock`), so it ends with its process however that ends: a lock left by a killed
    process is free for the next one, and two processes can never both take it over."""
    key = str(Path(folder).resolve())
    if key in _HELD:
        return
    fd = os.open(Path(folder) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError(
            f"{folder} is in use by process {holder} (its lock: {Path(folder) / LOCK}); wait "
            "for it to end or stop it, or choose another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = fd


@contextlib.contextmanager
def locked(folder: str | Path) -> Iterator[None]:
    """`folder`'s lock (flock on `folder/.lock`) while the block runs: a second process
    waits for the first to finish, then sees what it wrote (a shared folder made once)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    fd = os.open(Path(folder) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def open_run(
    out: str | Path, resume: bool, load: Callable[[Path], int], main: bool = True
) -> tuple[Path, Path, Path]:
    """A training run's folder, checkpoint path and metrics path. With resume, `load(ckpt)`
    restores the state and returns its step, and metric rows after that step are dropped;
    without, a folder that already holds a run is refused rather than overwritten. Only the
    main process (rank 0) touches files, and it holds the folder's lock (`hold_lock`)."""
    out = new_run_dir(out, resume=resume, lock=main)  # locked before anything is read there
    ckpt, metrics = out / CHECKPOINT, out / METRICS
    if main:
        checkpoint.remove_stale(ckpt)  # left by a process killed mid-write
    if resume:
        if not ckpt.exists():
            raise ConfigError(f"nothing to resume: {ckpt} does not exist")
        step = load(ckpt)
        if main:
            truncate_metrics(metrics, step)
    elif ckpt.exists():
        raise ConfigError(f"{out} already holds a run: pass --resume, or choose another --out")
    return out, ckpt, metrics


def write_text_atomic(path: Path, text: str) -> Path:
    """Replace `path` with `text` by one rename: a reader sees the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def truncate_metrics(path: Path, step: int) -> None:
    """Drop JSONL rows written after a checkpoint's step: a resumed run writes them again."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    write_text_atomic(path, "".join(ln + "\n" for ln in keep))


class CSVLog:
    """Append rows to a CSV as they come, so a killed run keeps what it measured; a run
    stopped before its first row leaves no file (a header alone would read as a result)."""

    def __init__(self, path: Path, fields: list[str]) -> None:
        self.path = Path(path)
        self._f = self.path.open("w", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=fields, extrasaction="ignore")
        self._w.writeheader()
        self.rows = 0

    def write(self, row: dict) -> None:
        """Append one row (keys not among the fields are ignored) and flush."""
        self._w.writerow(row)
        self._f.flush()
        self.rows += 1

    def close(self) -> None:
        """Close the file."""
        self._f.close()

    def __enter__(self) -> CSVLog:
        return self

    def __exit__(self, kind, *exc) -> None:
        self.close()
        if kind is not None and not self.rows:
            self.path.unlink(missing_ok=True)


class JSONLLog:
    """Append one JSON object a line, flushed each time."""

    def __init__(self, path: Path, append: bool = False) -> None:
        self.path = Path(path)
        self._f = self.path.open("a" if append else "w")

    def write(self, row: dict) -> None:
        """Append `row` as one JSON line and flush."""
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def close(self) -> None:
        """Close the file."""
        self._f.close()

    def __enter__(self) -> JSONLLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NullLog:
    """Where a process does not write metrics (data-parallel ranks other than 0)."""

    def write(self, row: dict) -> None:
        """Discard the row."""
        pass

    def __enter__(self) -> NullLog:
        return self

    def __exit__(self, *exc) -> None:
        pass


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint of `step` was saved. `text` says otherwise where
    the usual line does not hold (a grid continues by its own command, say)."""

    def __init__(
        self, step: int | None, folder: Path, signum: int, text: str | None = None
    ) -> None:
        super().__init__(
            text
            or f"interrupted at step {step}: checkpoint saved in {folder}; continue with --resume"
        )
        self.step, self.folder, self.signum, self.text = step, folder, signum, text

    def __reduce__(self):  # from a grid's worker process to its parent
        return type(self), (self.step, self.folder, self.signum, self.text)


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class GracefulStop:
    """While active, SIGINT and SIGTERM only set `signum`; the training loop checks it after a
    step, saves a checkpoint and stops. Outside the main thread it does nothing."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def device_name(device: torch.device) -> str:
    """The card's name for reports and summaries ("cpu" off the GPU)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def profile_steps(
    step: Callable[[], object], n: int, device: torch.device, rows: int = 25
) -> tuple[str, float]:
    """Profile n calls of `step()`: torch.profiler's kernel table and the GPU kernel time a call
    in ms, counted as the table's "Self CUDA time total" (user annotations are not kernels)."""
    cuda = device.type == "cuda"
    with torch.profiler.profile() as prof:
        for _ in range(n):
            step()
        if cuda:
            torch.cuda.synchronize(device)
    events = prof.key_averages()
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    kernel_us = sum(
        e.self_device_time_total
        for e in events
        if e.device_type == torch.autograd.DeviceType.CUDA and not e.is_user_annotation
    )
    return events.table(sort_by=sort, row_limit=rows), kernel_us / 1000 / n


def window_steps(step: int, every: int) -> int:
    """Training steps in the evaluation window that ends at `step` (the last may be short)."""
    return step - ((step - 1) // every) * every


def check_finite(rows: list[dict], step: int, since: int, key: str = "train_loss") -> None:
    """Stop (before the checkpoint is written) if any run's loss went NaN or infinite in the
    `since` steps up to `step`."""
    bad = [r for r in rows if r.get(key) is not None and not math.isfinite(r[key])]
    if bad:
        who = ", ".join(
            f"{r.get('variant', r.get('stream', 'run'))} seed {r.get('seed', '?')}" for r in bad[:3]
        )
        raise NonFiniteLoss(
            f"non-finite {key} ({who}) between steps {step - since} and "
            f"{step}: stopped; the last good checkpoint is kept"
        )
