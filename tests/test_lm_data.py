"""Corpora, tokenizers and token files, on small local files of the real formats."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from attnstreams.data import corpus
from attnstreams.data.corpus import iter_texts
from attnstreams.data.shards import TokenWindows, write_tokens
from attnstreams.data.tokenizer import BPETokenizer, GPT2Tokenizer, load_tokenizer
from attnstreams.run.config import ConfigError

FIXTURE = Path(__file__).parent / "fixtures" / "tinystories-sample.txt"


def test_real_tinystories_format_inline_separators():
    """The dataset's text files put <|endoftext|> at the end of a story's last line."""
    raw = FIXTURE.read_text()
    val = list(iter_texts(str(FIXTURE), "validation"))
    docs = val + list(iter_texts(str(FIXTURE), "train"))
    assert len(docs) == raw.count("<|endoftext|>") == 60
    assert all("<|endoftext|>" not in d and d == d.strip() and d for d in docs)
    assert val == [d.strip() for d in raw.split("<|endoftext|>") if corpus.in_validation(d)]


def test_split_is_by_a_hash_of_the_story(tmp_path):
    """The split does not depend on order or on which file holds a story; about
    VAL_PER_MILLE of stories are validation; the two sides never share a story."""
    stories = [f"story {i}\nline two" for i in range(3000)]
    p = tmp_path / "c.txt"
    p.write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories))
    train, val = list(iter_texts(str(p), "train")), list(iter_texts(str(p), "validation"))
    assert len(train) + len(val) == 3000 and not set(train) & set(val)
    assert abs(len(val) / 3000 - corpus.VAL_PER_MILLE / 1000) < 0.015  # 6% +- 3 sd
    # the same stories reversed and spread over a folder of two files: the same split
    folder = tmp_path / "folder"
    folder.mkdir()
    rev = stories[::-1]
    (folder / "a.txt").write_text("<|endoftext|>".join(rev[:1000]))
    (folder / "b.jsonl").write_text("\n".join(json.dumps({"text": s}) for s in rev[1000:]))
    assert sorted(iter_texts(str(folder), "validation")) == sorted(val)
    assert len(list(iter_texts(str(folder), "all"))) == 3000
    with pytest.raises(ConfigError, match="for a local file"):
        list(iter_texts("generated", "all"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("not a corpus")
    with pytest.raises(ConfigError, match="no corpus files"):
        list(iter_texts(str(empty), "train"))


def test_jsonl_and_errors(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps({"story": f"s{i}"}) for i in range(5)) + "\n")
    got = list(iter_texts(str(p), "all", text_field="story"))
    assert got == ["s0", "s1", "s2", "s3", "s4"]
    with pytest.raises(ConfigError, match="no 'text' field"):
        list(iter_texts(str(p), "train"))
    p.write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(ConfigError, match="not a string"):
        list(iter_texts(str(p), "all"))
    p.write_text('{"text": "ok"\n')
    with pytest.raises(ConfigError, match="not valid JSON"):
        list(iter_texts(str(p), "all"))


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "no train documents"),
        (b"caf\xe9 au lait\n<|endoftext|>\n", "not UTF-8"),
        (b"  \n<|endoftext|>\n\n", "no train documents"),
    ],
)
def test_bad_text_files(tmp_path, content, match):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(ConfigError, match=match):
        list(iter_texts(str(p), "train"))


def test_unknown_paths_and_formats(tmp_path):
    with pytest.raises(ConfigError, match="corpus not found"):
        list(iter_texts(str(tmp_path / "missing.txt")))
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ConfigError, match="unknown corpus format"):
        list(iter_texts(str(tmp_path / "x.csv")))
    with pytest.raises(ConfigError, match="split"):
        list(iter_texts("generated", "test"))


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [f"doc {i}" for i in range(3)]}), tmp_path / "c.parquet")
    assert list(iter_texts(str(tmp_path / "c.parquet"), "all")) == ["doc 0", "doc 1", "doc 2"]
    # a file named .parquet that is not one, and a column that is not text: one line each
    (tmp_path / "fake.parquet").write_text("Once upon a time.")
    with pytest.raises(ConfigError, match="fake.parquet is not a parquet file"):
        list(iter_texts(str(tmp_path / "fake.parquet"), "all"))
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "n.parquet")
    with pytest.raises(ConfigError, match="column 'text' holds int64, not text"):
        list(iter_texts(str(tmp_path / "n.parquet"), "all"))


def test_pretty_printed_json_is_told_the_format(tmp_path):
    (tmp_path / "c.json").write_text('{\n  "text": "Once upon a time."\n}\n')
    with pytest.raises(ConfigError, match="one JSON object a line"):
        list(iter_texts(str(tmp_path / "c.json"), "all"))


def test_huggingface_path_uses_datasets(monkeypatch):
    """The real loader, with `datasets` replaced by a local stand-in of the same interface."""
    calls = {}

    def load_dataset(name, split, streaming):
        calls.update(name=name, split=split, streaming=streaming)
        return iter([{"text": "Once upon a time."}, {"text": "The end."}])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert list(iter_texts("tinystories", "validation")) == ["Once upon a time.", "The end."]
    assert calls == {"name": "roneneldan/TinyStories", "split": "validation", "streaming": True}


def test_huggingface_offline_is_a_clear_error(monkeypatch):
    def load_dataset(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(ConfigError, match="offline"):
        list(iter_texts("tinystories"))
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ConfigError, match="datasets"):
        list(iter_texts("tinystories"))


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(iter_texts(str(FIXTURE), "train"), vocab_size=600)


@pytest.mark.parametrize(
    "text",
    [
        "Once upon a time, Lily gave the ball to Tom.",
        "naïve café 🎈 ~~",
        "  two  spaces\n\nnew lines\t",
        "<|endoftext|>The end.",
    ],
)
def test_bpe_round_trip(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_save_load_and_eot(bpe, tmp_path):
    bpe.save(tmp_path)
    again = load_tokenizer(tmp_path)
    text = "Tom and Mia went to the park."
    assert again.encode(text) == bpe.encode(text) and again.vocab_size == bpe.vocab_size
    assert bpe.encode("<|endoftext|>") == [bpe.eot_id]
    with pytest.raises(ConfigError, match="no tokenizer"):
        load_tokenizer(tmp_path / "nowhere")


class _FakeGPT2Encoding:
    """tiktoken's Encoding interface, offline: one id a character, end-of-text 50256."""

    n_vocab, eot_token = 50257, 50256

    def encode(self, text, allowed_special=frozenset()):
        assert allowed_special == {"<|endoftext|>"}  # the corpus' separator may be encoded
        return [ord(c) for c in text]

    def encode_batch(self, texts, allowed_special=frozenset()):
        return [self.encode(t, allowed_special) for t in texts]

    def decode(self, ids):
        return "".join(map(chr, ids))


def test_gpt2_tokenizer_through_tiktoken(monkeypatch, tmp_path):
    """The paper's tokenizer, with tiktoken replaced by a local stand-in of its interface;
    missing tiktoken and missing files (offline) are one-line errors."""
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # not installed
    with pytest.raises(ConfigError, match="needs tiktoken"):
        GPT2Tokenizer()

    def offline(name):
        raise OSError("could not download gpt2.tiktoken")

    monkeypatch.setitem(sys.modules, "tiktoken", types.SimpleNamespace(get_encoding=offline))
    with pytest.raises(ConfigError, match="offline"):
        GPT2Tokenizer()

    stub = types.SimpleNamespace(get_encoding=lambda name: _FakeGPT2Encoding())
    monkeypatch.setitem(sys.modules, "tiktoken", stub)
    tok = GPT2Tokenizer()
    assert (tok.vocab_size, tok.eot_id) == (50257, 50256)
    assert tok.decode(tok.encode("Once")) == "Once"
    assert tok.encode_batch(["a", "bc"]) == [[97], [98, 99]]
    tok.save(tmp_path)
    assert isinstance(load_tokenizer(tmp_path), GPT2Tokenizer)


def test_token_file_windows(bpe, tmp_path):
    docs = list(iter_texts(str(FIXTURE), "train"))
    n = write_tokens(docs, bpe, tmp_path / "t.bin", progress=False)
    expected = sum(len(bpe.encode(d)) + 1 for d in docs)
    assert n == expected
    w = TokenWindows(tmp_path / "t.bin", vocab_size=bpe.vocab_size)
    assert w.tokens.dtype == np.uint16 and len(w) == n
    x, y = w.sample(4, 16, torch.Generator().manual_seed(0))
    assert x.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])
    seq = list(w.sequential(2, 16, max_batches=1))[0]
    assert torch.equal(seq[0][0], torch.from_numpy(w.tokens[:16].astype(np.int64)))
    with pytest.raises(ConfigError, match="vocab"):
        TokenWindows(tmp_path / "t.bin", vocab_size=10)
    # Ids beyond the vocabulary (a damaged file) are refused.
    arr = np.fromfile(tmp_path / "t.bin", dtype=np.uint16)
    arr[7] = 60_000
    arr.tofile(tmp_path / "t.bin")
    with pytest.raises(ConfigError, match="beyond its vocabulary"):
        TokenWindows(tmp_path / "t.bin")
    # A truncated file is refused, not read as garbage.
    data = (tmp_path / "t.bin").read_bytes()
    (tmp_path / "t.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="truncated"):
        TokenWindows(tmp_path / "t.bin")


def test_write_tokens_max_and_atomic(bpe, tmp_path):
    n = write_tokens(
        iter(["hello world"] * 1000), bpe, tmp_path / "t.bin", max_tokens=500, progress=False
    )
    assert n == 500 and (tmp_path / "t.json").exists()
    with pytest.raises(ConfigError, match="no tokens"):
        write_tokens(iter([]), bpe, tmp_path / "empty.bin", progress=False)
    assert not (tmp_path / "empty.bin").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("suffix", [".txt", ".jsonl"])
def test_a_huge_single_line_is_a_clear_error(tmp_path, monkeypatch, suffix):
    monkeypatch.setattr(corpus, "MAX_DOC_CHARS", 5_000)
    p = tmp_path / f"big{suffix}"
    body = "a" * 3_000_000
    p.write_text(body if suffix == ".txt" else json.dumps({"text": body}))
    with pytest.raises(ConfigError, match="longer than 5,000 characters"):
        list(iter_texts(str(p), "all"))


def test_separator_split_across_read_blocks(tmp_path):
    p = tmp_path / "c.txt"
    first = "x" * ((1 << 20) - 5)  # the separator straddles the 1 MiB read boundary
    p.write_text(first + "<|endoftext|>second story<|endoftext|>")
    assert list(iter_texts(str(p), "all")) == [first, "second story"]
