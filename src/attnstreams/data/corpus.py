"""Corpora behind one interface, chosen with `--data tinystories|generated|PATH`.

- `tinystories`: Hugging Face `roneneldan/TinyStories` through `datasets` (needs internet and
  `pip install 'attnstreams[data]'`);
- `generated`: the offline story generator (unbounded, deterministic by seed);
- a path: `.txt` with stories separated by `<|endoftext|>` (the dataset's own text files),
  `.jsonl` / `.json` with one object per line holding a text field, or `.parquet`; or a folder
  of such files (read in name order).

Local files are split into train and validation by story, by a hash of the story's text
(`VAL_PER_MILLE` of the stories are validation): the split does not depend on the order or on
which files hold a story, and a story repeated in two files stays on one side. Generated
stories use a separate seed for validation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

from attnstreams.data.tokenizer import EOT
from attnstreams.run.config import ConfigError

SPLITS = ("train", "validation")
VAL_PER_MILLE = 60  # 6% of a local corpus's stories: ~850 of the 14,200 sample stories
FORMATS = (".txt", ".jsonl", ".json", ".parquet")
MAX_DOC_CHARS = 50_000_000  # one document; a longer one is an error, not a memory blow-up
HF_NAME = "roneneldan/TinyStories"


def _check_split(split: str) -> None:
    if split not in (*SPLITS, "all"):
        raise ConfigError(f"split must be one of {', '.join(SPLITS)} or all, got {split!r}")


def in_validation(text: str) -> bool:
    """Whether a story belongs to the validation split (a hash of its stripped text)."""
    h = hashlib.blake2b(text.strip().encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(h, "little") % 1000 < VAL_PER_MILLE


def _take_split(texts: Iterator[str], split: str) -> Iterator[str]:
    if split == "all":
        yield from texts
        return
    for t in texts:
        if in_validation(t) == (split == "validation"):
            yield t


def _too_long(path: Path) -> ConfigError:
    return ConfigError(
        f"{path}: a document longer than {MAX_DOC_CHARS:,} characters (missing {EOT} separators?)"
    )


SEPARATORS = {"eot": re.compile(re.escape(EOT)), "blank-line": re.compile(r"\n[ \t]*\n")}


def _read_txt(path: Path, separator: str = "eot") -> Iterator[str]:
    """Stories separated by <|endoftext|> (separator "eot": on a line of its own or inline, as
    the dataset's files put it at the end of a story's last line) or by blank lines
    ("blank-line"). Read in blocks, so one huge line cannot fill memory: a document over
    MAX_DOC_CHARS is an error."""
    split = SEPARATORS[separator].split
    buf = ""
    with path.open("r", encoding="utf-8") as f:
        while block := f.read(1 << 20):
            *done, buf = split(buf + block)
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
                raise ConfigError(
                    f"{path}:{n}: not valid JSON ({e.msg}); {path.suffix} corpora hold one "
                    "JSON object a line (JSON Lines), not a pretty-printed document"
                ) from None
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
    import pyarrow as pa

    try:
        pf = pq.ParquetFile(path)
    except pa.ArrowException as e:
        raise ConfigError(f"{path} is not a parquet file ({_one_line(e)})") from None
    if field not in pf.schema_arrow.names:
        raise ConfigError(f"{path}: no column {field!r} (choose one with --text-field)")
    kind = pf.schema_arrow.field(field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise ConfigError(f"{path}: column {field!r} holds {kind}, not text")
    try:
        for batch in pf.iter_batches(columns=[field]):
            for t in batch.column(0).to_pylist():
                if t and t.strip():
                    yield t
    except pa.ArrowException as e:  # a file damaged past its footer
        raise ConfigError(f"{path}: unreadable parquet ({_one_line(e)})") from None


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:200]


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
    data: str, split: str = "train", text_field: str = "text", seed: int = 0, separator: str = "eot"
) -> Iterator[str]:
    """Documents of a corpus, one string each, in a fixed order; split "all": every document
    of a local file or folder (one the user holds out as a whole)."""
    _check_split(split)
    if separator not in SEPARATORS:
        raise ConfigError(f"separator must be one of {', '.join(SEPARATORS)}, got {separator!r}")
    if split == "all" and data in ("generated", "tinystories"):
        raise ConfigError(f"split 'all' is for a local file, not {data}")
    if data == "generated":
        from attnstreams.data.stories import generate_stories

        yield from generate_stories(None, seed=seed if split == "train" else seed + 1_000_003)
        return
    if data == "tinystories":
        yield from _read_hf(split, text_field)
        return
    path = Path(data)
    if path.is_dir():
        files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in FORMATS)
        if not files:
            raise ConfigError(f"{path} holds no corpus files ({', '.join(FORMATS)})")
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(
            f"corpus not found: {data} (expected tinystories, generated, a file or a folder)"
        )
    any_doc = False
    for f in files:
        try:
            for doc in _take_split(_read_file(f, text_field, separator), split):
                any_doc = True
                yield doc
        except UnicodeDecodeError as e:
            raise ConfigError(f"{f} is not UTF-8 text ({e.reason})") from None
    if not any_doc:
        what = "documents" if split == "all" else f"{split} documents"
        hint = (
            f" (stories in a .txt file are separated by {EOT}, or by blank lines with "
            "--separator blank-line"
            + ("; --split all evaluates every document" if split == "validation" else "")
            + ")"
        )
        raise ConfigError(f"{path} holds no {what}{hint}")


def check_corpus(data: str, text_field: str = "text", separator: str = "eot") -> None:
    """Read a corpus's first train document: a missing file, a bad format or a missing extra
    fails here, before a command writes anything."""
    next(iter_texts(data, "train", text_field, separator=separator), None)


def _read_file(path: Path, text_field: str, separator: str = "eot") -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return _read_txt(path, separator)
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path, text_field)
    if suffix == ".parquet":
        return _read_parquet(path, text_field)
    raise ConfigError(f"unknown corpus format {suffix!r}: use .txt, .jsonl or .parquet")
