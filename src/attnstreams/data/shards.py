"""Pretokenised token files: a corpus is encoded once into a flat uint16/uint32 array on disk
(memory-mapped), then training samples random windows from it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from attnstreams.data.tokenizer import Tokenizer
from attnstreams.run.config import ConfigError
from attnstreams.run.logs import progress_bar

if TYPE_CHECKING:
    from collections.abc import Iterator


Encoded = tuple[np.ndarray, list[int], list[int]]  # ids; each document's tokens and bytes


def encode_docs(docs: list[str], tokenizer: Tokenizer) -> Encoded:
    """Documents' ids, each followed by end-of-text, as one array (the token file's dtype),
    with each document's token count and UTF-8 bytes (for bits per byte and cuts)."""
    ids = [t + [tokenizer.eot_id] for t in tokenizer.encode_batch(docs)]
    arr = np.fromiter((i for doc in ids for i in doc), dtype=np.int64)
    if arr.size and (arr.max() >= tokenizer.vocab_size or arr.min() < 0):
        raise ConfigError(f"token id out of the vocabulary ({tokenizer.vocab_size})")
    return (
        arr.astype(token_dtype(tokenizer.vocab_size)),
        [len(t) for t in ids],
        [len(d.encode("utf-8")) for d in docs],
    )


def token_dtype(vocab_size: int) -> type:
    """uint16 while the ids fit, else uint32."""
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def write_tokens(
    texts: Iterable[str] | None,
    tokenizer: Tokenizer,
    path: Path,
    max_tokens: int | None = None,
    batch: int = 1024,
    progress: bool = True,
    meta: dict | None = None,
    encoded: Iterable[Encoded] | None = None,
) -> int:
    """Encode documents (each followed by end-of-text) into `path`; returns the token count.
    Streams: memory holds one batch of documents, whatever the corpus size. `encoded`: chunks
    of `encode_docs` made elsewhere (in worker processes, say), written in their order in
    place of `texts`. Written to a temporary file and renamed, so `path` is never
    half-written. The sidecar `.json` records the count, the UTF-8 bytes of the documents
    encoded (for bits per byte), the SHA-256 of the token bytes (a resume checks it is the
    corpus it trained on) and `meta`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tokenizer.vocab_size)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    n = n_bytes = 0
    sha = hashlib.sha256()
    if encoded is None:
        it = iter(texts)
        encoded = (encode_docs(d, tokenizer) for d in iter(lambda: list(islice(it, batch)), []))
    try:
        with (
            tmp.open("wb") as f,
            progress_bar(max_tokens, path.name, "tok", progress) as bar,
        ):
            for arr, lens, sizes in encoded:
                if max_tokens is not None and n + arr.size > max_tokens:
                    # cut inside document j: its bytes in proportion to the tokens kept
                    room = max_tokens - n
                    ends = np.cumsum(lens)
                    j = int(np.searchsorted(ends, room, side="right"))
                    kept = room - (ends[j - 1] if j else 0)
                    sizes = [*sizes[:j], round(sizes[j] * kept / lens[j])] if kept else sizes[:j]
                    arr = arr[:room]
                n_bytes += sum(sizes)
                chunk = arr.astype(dtype, copy=False).tobytes()
                f.write(chunk)
                sha.update(chunk)
                n += arr.size
                bar.update(arr.size)
                if max_tokens is not None and n >= max_tokens:
                    break
            f.flush()
            os.fsync(f.fileno())
        if n == 0:
            raise ConfigError("the corpus produced no tokens")
        info = {
            "tokens": n,
            "bytes": n_bytes,
            "dtype": np.dtype(dtype).name,
            "vocab_size": tokenizer.vocab_size,
            "eot_id": tokenizer.eot_id,
            "tokenizer": tokenizer.name,
            "sha256": sha.hexdigest(),
            **(meta or {}),
        }
        path.with_suffix(".json").write_text(json.dumps(info))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


class TokenWindows:
    """Random (x, y) windows of length T from a token file; y is x shifted by one."""

    def __init__(self, path: Path, vocab_size: int | None = None) -> None:
        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            raise ConfigError(f"token file not found: {path}")
        self.meta = json.loads(meta_path.read_text())
        if vocab_size is not None and self.meta["vocab_size"] > vocab_size:
            raise ConfigError(
                f"{path}: tokenizer vocab {self.meta['vocab_size']} > model vocab {vocab_size}"
            )
        size = path.stat().st_size
        expected = self.meta["tokens"] * np.dtype(self.meta["dtype"]).itemsize
        if size != expected:
            raise ConfigError(f"{path} is truncated or damaged ({size} bytes, expected {expected})")
        self.tokens = np.memmap(path, dtype=self.meta["dtype"], mode="r")
        top = int(self.tokens.max()) if len(self.tokens) else 0  # one pass; catches corruption
        if top >= self.meta["vocab_size"]:
            raise ConfigError(
                f"{path} holds token id {top}, beyond its vocabulary of {self.meta['vocab_size']}"
            )

    def __len__(self) -> int:
        return len(self.tokens)

    def sample(
        self, batch: int, T: int, generator: torch.Generator, rows: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`batch` random windows drawn from `generator`; `rows` picks this process's share of
        them (data parallelism: every rank draws the same starts, reads only its rows)."""
        if len(self.tokens) < T + 2:
            raise ConfigError(f"token file too short ({len(self.tokens)}) for windows of {T + 1}")
        starts = torch.randint(len(self.tokens) - T - 1, (batch,), generator=generator).numpy()
        idx = starts[rows, None] + np.arange(T + 1)  # only this process's rows are read
        w = torch.from_numpy(self.tokens[idx].astype(np.int64))
        return w[:, :-1], w[:, 1:]

    @property
    def fingerprint(self) -> dict:
        """What identifies the token file for a resume: its count and the SHA-256 of its
        tokens (files written before it was kept: the count and bytes alone)."""
        return {k: self.meta[k] for k in ("tokens", "bytes", "sha256") if k in self.meta}

    @property
    def tokens_per_byte(self) -> float | None:
        """Tokens per UTF-8 byte of the text encoded (None for files made before it was kept)."""
        return self.meta["tokens"] / self.meta["bytes"] if self.meta.get("bytes") else None

    def documents(self, eot_id: int) -> list[np.ndarray]:
        """The file cut at end-of-text tokens: one array per document, separators dropped."""
        cuts = np.flatnonzero(np.asarray(self.tokens) == eot_id)
        starts = np.concatenate([[0], cuts + 1])
        ends = np.concatenate([cuts, [len(self.tokens)]])
        return [np.asarray(self.tokens[a:b]) for a, b in zip(starts, ends, strict=True) if b > a]

    def sequential(
        self, batch: int, T: int, max_batches: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Non-overlapping windows in order, for a deterministic evaluation loss."""
        n = (len(self.tokens) - 1) // T
        count = 0
        for start in range(0, n, batch):
            if max_batches is not None and count >= max_batches:
                return
            rows = np.arange(start, min(start + batch, n))[:, None] * T + np.arange(T + 1)
            w = torch.from_numpy(self.tokens[rows].astype(np.int64))
            yield w[:, :-1], w[:, 1:]
            count += 1
