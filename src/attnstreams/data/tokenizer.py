"""Tokenizers: GPT-2 BPE through tiktoken (the paper's; needs its files, i.e. internet once) and
a byte-level BPE trained locally with `tokenizers` (the offline default). Both are saved with a
run so a checkpoint is always evaluated with the tokenizer it was trained with."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from attnstreams.run.config import ConfigError

if TYPE_CHECKING:
    from tokenizers import Tokenizer as HFTokenizer

EOT = "<|endoftext|>"


class Tokenizer:
    """The interface the trainer and the evaluations use."""

    name: str
    vocab_size: int
    eot_id: int

    def encode(self, text: str) -> list[int]:
        """The token ids of `text`."""
        raise NotImplementedError

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """The token ids of each text; subclasses encode a batch faster than one at a time."""
        return [self.encode(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of token ids."""
        raise NotImplementedError

    def save(self, folder: Path) -> None:
        """Write what `load_tokenizer` needs to rebuild this tokenizer into `folder`."""
        raise NotImplementedError


class BPETokenizer(Tokenizer):
    """Byte-level BPE (GPT-2 style pre-tokenisation) from the `tokenizers` library."""

    name = "bpe"

    def __init__(self, tok: HFTokenizer) -> None:
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()
        eot = tok.token_to_id(EOT)
        if eot is None:
            raise ConfigError(f"tokenizer has no {EOT} token")
        self.eot_id = eot

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8192) -> BPETokenizer:
        """Train a byte-level BPE of `vocab_size` tokens (EOT included) on `texts`, offline."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if vocab_size < 300:
            raise ConfigError(f"vocab_size must be >= 300 for byte-level BPE, got {vocab_size}")
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        """The token ids of `text`."""
        return self._tok.encode(text).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """The token ids of each text, encoded in parallel by `tokenizers`."""
        return [e.ids for e in self._tok.encode_batch(texts)]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of token ids (special tokens kept)."""
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def meta(self) -> dict:
        """What tokenizer_meta.json records beside tokenizer.json."""
        return {"kind": "bpe"}

    def save(self, folder: Path) -> None:
        """Write tokenizer.json and its tokenizer_meta.json (`meta`) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_meta.json").write_text(json.dumps(self.meta()))


class GPT2Tokenizer(Tokenizer):
    """GPT-2's BPE (vocab 50257, end-of-text 50256) through tiktoken."""

    name = "gpt2"

    def __init__(self) -> None:
        try:
            import tiktoken

            self._enc = tiktoken.get_encoding("gpt2")
        except ImportError:
            raise ConfigError(
                "the gpt2 tokenizer needs tiktoken: pip install 'attnstreams[data]'"
            ) from None
        except Exception as e:  # tiktoken downloads its files on first use
            raise ConfigError(
                f"could not load the gpt2 tokenizer (offline? use --tokenizer bpe): {e}"
            ) from None
        self.vocab_size = self._enc.n_vocab
        self.eot_id = self._enc.eot_token

    def encode(self, text: str) -> list[int]:
        """The token ids of `text` (a literal end-of-text string becomes the EOT token)."""
        return self._enc.encode(text, allowed_special={EOT})

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """The token ids of each text, encoded in parallel by tiktoken."""
        return self._enc.encode_batch(texts, allowed_special={EOT})

    def decode(self, ids: Iterable[int]) -> str:
        """The text of token ids."""
        return self._enc.decode(list(ids))

    def save(self, folder: Path) -> None:
        """Write a tokenizer_meta.json saying "gpt2" (tiktoken holds the vocabulary itself)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tokenizer_meta.json").write_text(json.dumps({"kind": "gpt2"}))


class PretrainedTokenizer(BPETokenizer):
    """A pretrained model's fast tokenizer (its folder's tokenizer.json); the end-of-text token
    is EOT if it has one, else the eos_token of its tokenizer_config.json."""

    name = "pretrained"

    def __init__(self, tok: HFTokenizer, eot_id: int) -> None:
        self._tok, self.vocab_size, self.eot_id = tok, tok.get_vocab_size(), eot_id

    @staticmethod
    def check_folder(folder: str | Path) -> Path:
        """`folder` as a Path if it holds a tokenizer.json, else a ConfigError."""
        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file():
            raise ConfigError(
                f"tokenizer must be bpe, gpt2 or a folder with a tokenizer.json: {str(folder)!r}"
            )
        return folder

    @classmethod
    def from_folder(cls, folder: str | Path) -> PretrainedTokenizer:
        """Load a pretrained model's tokenizer from its folder, finding its end-of-text id."""
        folder = cls.check_folder(folder)
        tok = _read_tokenizer_json(folder)
        eot = tok.token_to_id(EOT)
        config = folder / "tokenizer_config.json"
        if eot is None and config.is_file():
            eos = json.loads(config.read_text()).get("eos_token")
            eos = eos.get("content") if isinstance(eos, dict) else eos
            eot = tok.token_to_id(eos) if isinstance(eos, str) else None
        if eot is None:
            raise ConfigError(f"the tokenizer in {folder} has no {EOT} or eos_token")
        return cls(tok, eot)

    def meta(self) -> dict:
        """The kind and the end-of-text id (not found again from the files on load)."""
        return {"kind": "pretrained", "eot_id": self.eot_id}


def _read_tokenizer_json(folder: Path) -> HFTokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    try:
        return HFTokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as e:
        raise ConfigError(f"unreadable tokenizer in {folder}: {e}") from None


TOKENIZER_FILES = ("tokenizer_meta.json", "tokenizer.json")


def tokenizer_digest(folder: Path) -> str:
    """SHA-256 of the tokenizer files saved in `folder`: token files record it, so that a
    tokenizer replaced beside them (by another `lm prepare`, say) is found, not used."""
    sha = hashlib.sha256()
    for name in TOKENIZER_FILES:
        f = Path(folder) / name
        if f.is_file():
            sha.update(name.encode() + b"\0" + f.read_bytes())
    return sha.hexdigest()


def load_tokenizer(folder: Path) -> Tokenizer:
    """The tokenizer saved beside a run or a token cache."""
    folder = Path(folder)
    meta_path = folder / "tokenizer_meta.json"
    if not meta_path.is_file():
        raise ConfigError(f"no tokenizer saved in {folder}")
    meta = json.loads(meta_path.read_text())
    kind = meta.get("kind")
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "bpe":
        tok = _read_tokenizer_json(folder)
        try:
            return BPETokenizer(tok)
        except ConfigError as e:
            raise ConfigError(f"unreadable tokenizer in {folder}: {e}") from None
    if kind == "pretrained":
        return PretrainedTokenizer(_read_tokenizer_json(folder), meta.get("eot_id"))
    raise ConfigError(f"unknown tokenizer kind {kind!r} in {meta_path}")
