"""Run folders and metric files written as the work goes (CSV/JSONL, flushed per row)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from .config import ConfigError


def new_run_dir(out: str | Path | None, root: str | Path = "runs") -> Path:
    """`out` if given, else runs/<timestamp>/; created, and checked writable up front."""
    path = Path(out) if out else Path(root) / time.strftime("%Y%m%d-%H%M%S")
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".write-test"
    probe.write_text("")
    probe.unlink()
    return path


CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"


def open_run(out: str | Path, resume: bool, load) -> tuple[Path, Path, Path]:
    """A training run's folder, checkpoint path and metrics path. With resume, `load(ckpt)`
    restores the state and returns its step, and metric rows after that step are dropped;
    without, a folder that already holds a run is refused rather than overwritten."""
    out = new_run_dir(out)
    ckpt, metrics = out / CHECKPOINT, out / METRICS
    if resume:
        if not ckpt.exists():
            raise ConfigError(f"nothing to resume: {ckpt} does not exist")
        truncate_metrics(metrics, load(ckpt))
    elif ckpt.exists():
        raise ConfigError(f"{out} already holds a run: pass --resume, or choose another --out")
    return out, ckpt, metrics


def truncate_metrics(path: Path, step: int) -> None:
    """Drop JSONL rows written after a checkpoint's step: a resumed run writes them again."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    tmp.replace(path)


class CSVLog:
    """Append rows to a CSV as they come, so a killed run keeps what it measured."""

    def __init__(self, path: Path, fields: list[str]) -> None:
        self.path = Path(path)
        self._f = self.path.open("w", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=fields, extrasaction="ignore")
        self._w.writeheader()

    def write(self, row: dict) -> None:
        self._w.writerow(row)
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> CSVLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class JSONLLog:
    """Append one JSON object a line, flushed each time."""

    def __init__(self, path: Path, append: bool = False) -> None:
        self.path = Path(path)
        self._f = self.path.open("a" if append else "w")

    def write(self, row: dict) -> None:
        self._f.write(json.dumps(row) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JSONLLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
