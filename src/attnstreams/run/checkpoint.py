"""Checkpoints: safetensors (no pickle), written atomically (temporary file, fsync, rename),
with a SHA-256 of their tensor data that is checked before a new file replaces the old one
and on every load, so a corrupted checkpoint is refused rather than resumed from."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from attnstreams.run.config import ConfigError


def _tmp_dir(path: Path, pid: int | str) -> Path:
    """Where process `pid` writes `path` (pid "*": a glob pattern for every process's)."""
    return path.with_name(f".{path.name}.tmp-{pid}")


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the tensor data: every name, dtype, shape and byte, in name order."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().cpu()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def save(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Write tensors and JSON metadata so that `path` is always either the old or the new file.

    The file is written in a private temporary folder beside `path` (safetensors itself writes
    through a temporary file there), fsynced, read back and checked against the digest of the
    tensors given, and only then renamed into place: until the new file verifies, the old one
    stays. A process killed midway leaves only that folder, which `remove_stale` clears."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = _tmp_dir(path, os.getpid())
    tmp_dir.mkdir(exist_ok=True)
    tmp = tmp_dir / path.name
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    try:
        sha = digest(tensors)
        save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta), "sha256": sha})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if digest(load_file(str(tmp))) != sha:
            raise OSError(
                f"the checkpoint written for {path} did not read back intact; kept the old one"
            )
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


class BackgroundSaver:
    """`save` on a worker thread: the caller snapshots the tensors to host memory and goes on
    training while the file is written and fsynced (50-130 ms a toy-grid checkpoint on the
    H100 machine, 150 times a grid). One write at a time: a save waits for the previous one,
    and a failed write raises at the next `save` or `wait`, or on leaving the `with` block
    (unless an exception is already leaving it: that one wins, the write error is printed)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None

    def save(self, path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        """Snapshot `tensors` to host memory now and write them to `path` in the background."""
        self.wait()
        host = {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}  # now, not later
        self._pending = self._pool.submit(save, path, host, meta)

    def wait(self) -> None:
        """Block until the pending write is done, raising its error if it failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> BackgroundSaver:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.wait()
        except Exception as e:
            if exc is None:
                raise
            # Keep the exception that ended the block (a signal's exit code depends on it).
            print(f"attnstreams: the last checkpoint write failed too: {e}", file=sys.stderr)
        finally:
            self._pool.shutdown()


def remove_stale(path: str | Path) -> None:
    """Clear what writes of `path` killed midway left behind (by any process)."""
    path = Path(path)
    for stale in path.parent.glob(_tmp_dir(path, "*").name):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def saved_step(path: str | Path) -> int | None:
    """The step a checkpoint holds, from its header alone (no tensor data is read or
    checked); None where there is no readable checkpoint."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
    except (SafetensorError, OSError, ValueError):
        return None
    return meta.get("step") if isinstance(meta, dict) else None


def load(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and metadata; a clear ConfigError for a missing, truncated, corrupted (its data
    does not match its digest) or foreign file. Files written before digests load unchecked."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        meta = json.loads(header.get("meta", "null"))
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as e:
        raise ConfigError(f"not a readable attnstreams checkpoint: {path} ({e})") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"not an attnstreams checkpoint (no metadata): {path}")
    if "sha256" in header and digest(tensors) != header["sha256"]:
        raise ConfigError(
            f"checkpoint {path} is corrupted: its tensor data does not match the SHA-256 "
            "written with it; refusing to use it"
        )
    if torch.device(device).type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta
