"""Experiment 2's data: a corpus tokenised once into token files (train.bin, validation.bin),
with the tokenizer and the IOI vocabulary beside them. In the name-resampling setting the
train split is written as many renamed copies, made in parallel worker processes."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

from attnstreams.data.corpus import iter_texts
from attnstreams.data.shards import Encoded, encode_docs, write_tokens
from attnstreams.data.tokenizer import (
    BPETokenizer,
    GPT2Tokenizer,
    PretrainedTokenizer,
    Tokenizer,
    load_tokenizer,
    tokenizer_digest,
)
from attnstreams.run.config import ConfigError, check_choice, check_range, differences
from attnstreams.run.logs import locked, write_text_atomic


@dataclass(frozen=True)
class DataConfig:
    """Which corpus, tokenizer and split sizes the token files are made from."""

    data: str = "generated"  # tinystories | generated | PATH (a file or a folder of files)
    # bpe (trained locally) | gpt2 (tiktoken) | a folder with a tokenizer.json (a model's)
    tokenizer: str = "bpe"
    vocab_size: int = 8192  # of the local BPE
    tokenizer_docs: int = 20_000  # documents the BPE is trained on
    train_tokens: int | None = 20_000_000  # None: the whole corpus (not for `generated`)
    val_tokens: int = 500_000
    text_field: str = "text"
    separator: str = "eot"  # of stories in .txt files: eot (<|endoftext|>) | blank-line
    seed: int = 0
    # original | resampled: the train split written `copies` times, each copy with every
    # character name replaced (data/names.py); the IOI set then uses held-out names
    names: str = "original"
    copies: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.tokenizer, str):
            raise ConfigError(f"tokenizer must be bpe, gpt2 or a folder, got {self.tokenizer!r}")
        if self.tokenizer not in ("bpe", "gpt2"):
            PretrainedTokenizer.check_folder(self.tokenizer)
        check_choice("names", self.names, ("original", "resampled"))
        check_choice("separator", self.separator, ("eot", "blank-line"))
        check_range("vocab_size", self.vocab_size, lo=300, hi=1 << 20)
        check_range("val_tokens", self.val_tokens, lo=1000)
        check_range("seed", self.seed, lo=0, hi=2**62)
        check_range("copies", self.copies, lo=1, hi=1000)
        if self.copies > 1 and self.names == "original":
            raise ConfigError("copies > 1 needs names=resampled (identical copies add nothing)")
        if self.copies > 1 and self.train_tokens is not None:
            raise ConfigError("copies > 1 renames the whole train split: set train_tokens None")
        if self.train_tokens is not None:
            check_range("train_tokens", self.train_tokens, lo=1000)
        elif self.data == "generated":
            raise ConfigError("the generated corpus is unbounded: set train_tokens")


IOI_VOCAB = "ioi_vocab.json"
STAMP = "data_config.json"  # the DataConfig the folder's files were made from, written last
MIN_SINGLE = 20  # single-token IOI names, if the vocabulary has this many of them
MIN_COUNT = 20  # a name, place or object the IOI set uses occurs this often in the train text


def _renamed(texts, seed: int, copy: int | str):
    """Each story renamed with its own generator, so a copy does not depend on the stories
    before it (a story's renaming is fixed by seed, copy and its index)."""
    from attnstreams.data.names import resample_names

    for i, t in enumerate(texts):
        yield resample_names(t, random.Random(f"{seed}:{copy}:{i}"))


def _split_texts(cfg: DataConfig, split: str, copy: int | str = 0):
    texts = iter_texts(cfg.data, split, cfg.text_field, cfg.seed, cfg.separator)
    return _renamed(texts, cfg.seed, copy) if cfg.names == "resampled" else texts


def prepare_data(
    cfg: DataConfig, folder: Path, progress: bool = True, workers: int | None = None
) -> Path:
    """Token files train.bin / validation.bin, the tokenizer and the IOI vocabulary in
    `folder` (reused if there). The tokenizer sees train text only: the first copy of the
    train split (renamed in the resampled setting). In the resampled setting the validation
    split is renamed once too, so held-out loss measures the distribution trained on.
    workers: processes that make the renamed copies (default: every core); the files are the
    same whatever their number. They are spawned, so a script that calls this with several
    copies needs Python's `if __name__ == "__main__":` guard (the CLI has it)."""
    folder = Path(folder)
    new = not folder.exists()
    with locked(folder):  # a second prepare into the folder waits, then reuses or refuses
        stamp = folder / STAMP
        if stamp.exists():
            saved = json.loads(stamp.read_text())
            if saved != asdict(cfg):
                changed = "; ".join(differences(saved, asdict(cfg)))
                raise ConfigError(
                    f"{folder} holds tokens of another data config ({changed}); use another folder"
                )
            return folder
        try:
            _prepare(cfg, folder, progress, workers)
        except BaseException:
            if new:  # a refusal or a stop leaves no half-made folder behind
                shutil.rmtree(folder, ignore_errors=True)
            raise
    return folder


def _prepare(cfg: DataConfig, folder: Path, progress: bool, workers: int | None) -> None:
    if progress:
        size = "all" if cfg.train_tokens is None else f"{cfg.train_tokens:,}"
        print(
            f"preparing {folder}: "
            + ("GPT-2's tokenizer" if cfg.tokenizer == "gpt2" else
               f"a {cfg.vocab_size:,}-token BPE trained on up to {cfg.tokenizer_docs:,} stories"
               if cfg.tokenizer == "bpe" else f"the tokenizer of {cfg.tokenizer}")
            + f"; {size} train tokens"
            + (f" x {cfg.copies} renamed copies" if cfg.copies > 1 else "")
            + f", up to {cfg.val_tokens:,} validation tokens of {cfg.data}",
            file=sys.stderr,
            flush=True,
        )  # fmt: skip
    if cfg.tokenizer == "gpt2":
        tok: Tokenizer = GPT2Tokenizer()
    elif cfg.tokenizer != "bpe":
        tok = PretrainedTokenizer.from_folder(cfg.tokenizer)
    else:
        tok = BPETokenizer.train(
            islice(_split_texts(cfg, "train"), cfg.tokenizer_docs), cfg.vocab_size
        )
    tok.save(folder)
    tied = {"tokenizer_sha256": tokenizer_digest(folder)}  # checked on every read
    counts: Counter[str] = Counter()  # words of the first copy, for the IOI vocabulary
    workers = min(cfg.copies, workers or os.cpu_count() or 1)
    if workers > 1:  # each copy renamed and encoded in a worker; written in order here
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            jobs = pool.map(
                _encoded_copy, [(asdict(cfg), str(folder), c) for c in range(cfg.copies)]
            )
            write_tokens(
                None,
                tok,
                folder / "train.bin",
                progress=progress,
                meta={"copies": cfg.copies, "names": cfg.names, **tied},
                encoded=(_counted(job, counts) for job in jobs),
            )
    else:
        copies = (
            _counting(_split_texts(cfg, "train", c), counts)
            if c == 0
            else _split_texts(cfg, "train", c)
            for c in range(cfg.copies)
        )
        write_tokens(
            (t for texts in copies for t in texts),
            tok,
            folder / "train.bin",
            max_tokens=cfg.train_tokens,
            progress=progress,
            meta={"copies": cfg.copies, "names": cfg.names, **tied},
        )
    write_tokens(
        _split_texts(cfg, "validation", "validation"),
        tok,
        folder / "validation.bin",
        max_tokens=cfg.val_tokens,
        progress=progress,
        meta={"names": cfg.names, **tied},
    )
    write_text_atomic(folder / IOI_VOCAB, json.dumps(ioi_vocabulary(cfg.names, counts), indent=1))
    write_text_atomic(folder / STAMP, json.dumps(asdict(cfg)))


def data_tokenizer(folder: Path) -> Tokenizer:
    """The tokenizer of a token-file folder, refused if it is not the one the token files
    were made with (their train.json records its digest; older folders did not)."""
    tok, have = load_tokenizer(folder), tokenizer_digest(folder)
    for split in ("train", "validation"):
        meta = Path(folder) / f"{split}.json"
        want = json.loads(meta.read_text()).get("tokenizer_sha256") if meta.is_file() else None
        if want is not None and want != have:
            raise ConfigError(
                f"the tokenizer in {folder} is not the one its {split} tokens were made with "
                "(was another `lm prepare` pointed at the folder?); prepare it again in a new "
                "folder"
            )
    return tok


def _counting(texts, counts: Counter):
    for t in texts:
        counts.update(re.findall(r"[A-Za-z]+", t))
        yield t


def _encoded_copy(job: tuple[dict, str, int]) -> tuple[Encoded, Counter | None]:
    """Copy c of the train split, renamed and encoded (in a worker process), with the words
    of copy 0 counted."""
    cfg_dict, folder, c = job
    cfg, tok = DataConfig(**cfg_dict), load_tokenizer(Path(folder))
    counts: Counter[str] | None = Counter() if c == 0 else None
    texts = _split_texts(cfg, "train", c)
    docs = list(texts if counts is None else _counting(texts, counts))
    return encode_docs(docs, tok), counts


def _counted(job: tuple[Encoded, Counter | None], counts: Counter) -> Encoded:
    encoded, got = job
    if got is not None:
        counts.update(got)
    return encoded


def ioi_vocabulary(names: str, counts: Counter) -> dict:
    """The names, places and objects of the IOI set for this data: names that occur at least
    MIN_COUNT times in the train text (original setting) or the held-out names no training
    text contains (resampled setting); places and objects that occur in the train text."""
    from attnstreams.data import names as N
    from attnstreams.experiments.lm.evals import OBJECTS, PLACES

    if names == "resampled":
        chosen = list(N.HELD_OUT)
    else:
        chosen = sorted((n for n in N.GENDER if counts[n] >= MIN_COUNT), key=lambda n: -counts[n])
    return {
        "setting": names,
        "names": chosen,
        "places": [p for p in PLACES if counts[p] >= MIN_COUNT] or list(PLACES),
        "objects": [o for o in OBJECTS if counts[o] >= MIN_COUNT] or list(OBJECTS),
    }
