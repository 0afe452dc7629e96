"""Corpora behind one interface, chosen with `--data tinystories|generated|PATH`.

- `tinystories`: Hugging Face `roneneldan/TinyStories` through `datasets` (needs internet and
  `pip install 'attnstreams[data]'`);
- `generated`: the offline story generator (unbounded, deterministic by seed);
- a path: `.txt` with stories separated by `<|endoftext|>` (the dataset's own text files),
  `.jsonl` / `.json` with one object per line holding a text field, or `.parquet`.

Local files are split into train and validation by story index (every 100th story is
validation); generated stories use a separate seed for validation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ..config import ConfigError
from .tokenizer import EOT

SPLITS = ("train", "validation")
VAL_EVERY = 100
MAX_DOC_CHARS = 50_000_000  # one document; a longer one is an error, not a memory blow-up
HF_NAME = "roneneldan/TinyStories"


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def _take_split(texts: Iterator[str], split: str) -> Iterator[str]:
    for i, t in enumerate(texts):
        if (i % VAL_EVERY == 0) == (split == "validation"):
            yield t


def _too_long(path: Path) -> ConfigError:
    return ConfigError(
        f"{path}: a document longer than {MAX_DOC_CHARS:,} characters (missing {EOT} separators?)"
    )


def _read_txt(path: Path) -> Iterator[str]:
    """Stories separated by <|endoftext|>, on a line of its own or inline (the dataset's files
    put it at the end of a story's last line). Read in blocks, so one huge line cannot fill
    memory: a document over MAX_DOC_CHARS is an error."""
    buf = ""
    with path.open("r", encoding="utf-8") as f:
        while block := f.read(1 << 20):
            *done, buf = (buf + block).split(EOT)
            for piece in done:
                if piece.strip():
                    yield piece.strip()
            if len(buf) > MAX_DOC_CHARS:
                raise _too_long(path)
    if buf.strip():
        yield buf.strip()


def _read_jsonl(path: Path, field: str) -> Iterator[str]:
    with path.open("r", encoding="utf-8") as f:
        for n, line in enumerate(iter(lambda: f.readline(MAX_DOC_CHARS + 1), ""), 1):
            if len(line) > MAX_DOC_CHARS:
                raise _too_long(path)
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or field not in obj:
                raise ConfigError(f"{path}:{n}: no {field!r} field (choose one with --text-field)")
            if not isinstance(obj[field], str):
                raise ConfigError(f"{path}:{n}: field {field!r} is not a string")
            if obj[field].strip():
                yield obj[field]


def _read_parquet(path: Path, field: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            "reading parquet needs pyarrow: pip install 'attnstreams[data]'"
        ) from None
    pf = pq.ParquetFile(path)
    if field not in pf.schema_arrow.names:
        raise ConfigError(f"{path}: no column {field!r} (choose one with --text-field)")
    for batch in pf.iter_batches(columns=[field]):
        for t in batch.column(0).to_pylist():
            if t and t.strip():
                yield t


def _read_hf(split: str, field: str) -> Iterator[str]:
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            "--data tinystories needs the `datasets` package: pip install 'attnstreams[data]' "
            "(or use --data generated, or a local file)"
        ) from None
    try:
        ds = datasets.load_dataset(HF_NAME, split=split, streaming=True)
    except Exception as e:  # no network, hub errors
        raise ConfigError(
            f"could not load {HF_NAME} ({type(e).__name__}: {e}); offline? "
            "use --data generated or a local file"
        ) from None
    for row in ds:
        yield row[field]


def iter_texts(
    data: str, split: str = "train", text_field: str = "text", seed: int = 0
) -> Iterator[str]:
    """Documents of a corpus, one string each, in a fixed order."""
    _check_split(split)
    if data == "generated":
        from .stories import generate_stories

        yield from generate_stories(None, seed=seed if split == "train" else seed + 1_000_003)
        return
    if data == "tinystories":
        yield from _read_hf(split, text_field)
        return
    path = Path(data)
    if not path.is_file():
        raise ConfigError(f"corpus not found: {data} (expected tinystories, generated or a file)")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        docs = _read_txt(path)
    elif suffix in (".jsonl", ".json"):
        docs = _read_jsonl(path, text_field)
    elif suffix == ".parquet":
        docs = _read_parquet(path, text_field)
    else:
        raise ConfigError(f"unknown corpus format {suffix!r}: use .txt, .jsonl or .parquet")
    any_doc = False
    try:
        for doc in _take_split(docs, split):
            any_doc = True
            yield doc
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text ({e.reason})") from None
    if not any_doc:
        raise ConfigError(f"{path} holds no {split} documents")
