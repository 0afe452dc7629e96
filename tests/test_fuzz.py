"""Fuzzing (hypothesis): CLI arguments, config files, configs, corpus readers, tokenizer and
checkpoint loading never raise anything but the documented errors."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnstreams.amicl import AMICLConfig
from attnstreams.cli import main
from attnstreams.data.corpus import iter_texts
from attnstreams.data.tokenizer import BPETokenizer
from attnstreams.experiments.icl.task import ICLTaskConfig
from attnstreams.experiments.icl.train import ICLTrainConfig
from attnstreams.experiments.lm.train import DataConfig, LMTrainConfig
from attnstreams.models.gpt import GPTConfig
from attnstreams.models.toy import ToyICLConfig
from attnstreams.run import checkpoint
from attnstreams.run.config import ConfigError
from attnstreams.streams import StreamConfig

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FIXTURE = Path(__file__).parent / "fixtures" / "tinystories-sample.txt"

weird = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True).map(str),
    st.sampled_from(
        [
            "",
            "-",
            "nan",
            "inf",
            "-0",
            "1e400",
            "value",
            "dot",
            "x" * 300,
            "0x10",
            "2",
            "20",
            "1.5",
            "--json",
        ]
    ),
    st.text(max_size=20),
)
AMICL_FLAGS = [
    "--a",
    "--dim",
    "--classes",
    "--length",
    "--eps",
    "--noise-std",
    "--similarity",
    "--readout",
    "--beta",
    "--seed",
    "--method",
]


class Stop(Exception):
    """Raised by the stubs: everything was validated, the work would start here."""


def stop(*a, **k):
    raise Stop


def call(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse: --help / bad usage
        return e.code


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(AMICL_FLAGS), weird), max_size=6))
def test_fuzz_amicl_cli(capsys, pairs):
    argv = ["amicl", "run", "--trials", "50"] + [x for p in pairs for x in p]
    code = call(argv)
    out, err = capsys.readouterr()
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1


TRAIN_FLAGS = [
    "--steps",
    "--batch",
    "--lr",
    "--eval-every",
    "--eval-size",
    "--precision",
    "--device",
    "--stream",
    "--seed",
    "--weight-decay",
]


@FUZZ
@given(
    st.sampled_from(["icl", "lm"]),
    st.lists(st.tuples(st.sampled_from(TRAIN_FLAGS), weird), min_size=1, max_size=5),
)
def test_fuzz_train_cli_validation(monkeypatch, capsys, verb, pairs):
    """Argument and config validation of the training verbs (training itself stubbed out)."""
    import attnstreams.experiments.icl.train
    import attnstreams.experiments.lm.train

    monkeypatch.setattr(attnstreams.experiments.icl.train, "ICLGrid", stop)
    monkeypatch.setattr(attnstreams.experiments.lm.train, "prepare_data", stop)
    pairs = [(f, v) for f, v in pairs if not (verb == "icl" and f in ("--stream",))]
    argv = [verb, "train", "--out", tempfile.mkdtemp()] + [x for p in pairs for x in p]
    try:
        code = call(argv)
    except Stop:
        code = 0  # everything validated; training would start here
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "Traceback" not in err


VERBS = {  # argv prefix, the flags fuzzed (each with a weird value)
    "amicl sweep": (["amicl", "sweep", "--trials", "20", "--values", "1,2"],
                    ["--over", "--values", "--similarity", "--a", "--length", "--method"]),
    "amicl attention": (["amicl", "attention"], ["--a", "--length", "--similarity", "--beta"]),
    "lm prepare": (["lm", "prepare", "--data-dir"], ["--names", "--copies", "--separator",
                   "--vocab-size", "--train-tokens", "--val-tokens", "--tokenizer", "--epochs"]),
    "lm grid": (["lm", "grid"], ["--workers", "--seeds", "--stream", "--epochs", "--names",
                "--icl-positions", "--eval-batches", "--ioi-prompts", "--block-size",
                "--dropout", "--copies", "--separator"]),
    "lm train": (["lm", "train"], ["--icl-positions", "--epochs", "--names", "--threads",
                 "--stop-after", "--parallel", "--nonfinite", "--preset", "--warmup"]),
    "icl grid": (["icl", "grid"], ["--variants", "--seeds", "--init", "--eval-size"]),
    "lm eval": (["lm", "eval", "missing.safetensors"], ["--split", "--separator", "--device"]),
    "lm sample": (["lm", "sample", "missing.safetensors"], ["--top-k", "--temperature"]),
    "report": (["lm", "report"], []),
    "threads": (["--threads"], []),
}  # fmt: skip


@FUZZ
@given(st.sampled_from(sorted(VERBS)), st.data())
def test_fuzz_every_verb(monkeypatch, capsys, verb, data):
    """Every verb's options once more: exit 0 or 2, never a traceback, one line on error (the
    work itself stubbed out once everything is validated)."""
    import attnstreams.experiments.icl.train
    import attnstreams.experiments.lm.train

    monkeypatch.setattr(attnstreams.experiments.icl.train, "ICLGrid", stop)
    monkeypatch.setattr(attnstreams.experiments.lm.train, "prepare_data", stop)
    monkeypatch.setattr(attnstreams.experiments.lm.train, "run_grid", stop)
    prefix, flags = VERBS[verb]
    with tempfile.TemporaryDirectory() as d:
        argv = [x.replace("--data-dir", f"--data-dir={d}/data") for x in prefix]
        if flags:
            pairs = data.draw(st.lists(st.tuples(st.sampled_from(flags), weird), max_size=4))
            argv += [x for p in pairs for x in p]
            if verb != "lm prepare":
                argv += ["--out", f"{d}/out"]
        else:
            argv += [data.draw(weird)]
        if verb == "threads":
            argv += ["amicl", "run", "--trials", "20"]
        try:
            code = call(argv)
        except Stop:
            code = 0
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, err)
    assert "Traceback" not in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1, (argv, err)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=5,
)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "steps",
                "lr",
                "batch",
                "stream",
                "compile",
                "stepz",
                "eval-every",
                "precision",
                "seed",
                "dropout",
            ]
        ),
        json_values,
        max_size=4,
    )
)
def test_fuzz_config_files(monkeypatch, capsys, data):
    import attnstreams.experiments.lm.train

    monkeypatch.setattr(attnstreams.experiments.lm.train, "prepare_data", stop)
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "c.json"
        cfg.write_text(json.dumps(data))
        try:
            code = call(["lm", "train", "--config", str(cfg), "--out", d])
        except Stop:
            code = 0
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "Traceback" not in err


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
)


@FUZZ
@given(
    st.sampled_from(
        [
            AMICLConfig,
            ICLTaskConfig,
            ICLTrainConfig,
            LMTrainConfig,
            DataConfig,
            GPTConfig,
            ToyICLConfig,
            StreamConfig,
        ]
    ),
    st.data(),
)
def test_fuzz_config_dataclasses(cls, data):
    import dataclasses

    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = data.draw(st.dictionaries(st.sampled_from(names), anything, max_size=3))
    try:
        cls(**kwargs)
    except ConfigError:
        pass


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([".txt", ".jsonl"]))
def test_fuzz_corpus_readers(raw, suffix):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"c{suffix}"
        p.write_bytes(raw)
        for split in ("train", "validation"):
            try:
                docs = list(iter_texts(str(p), split))
            except ConfigError:
                continue
            assert all(isinstance(x, str) and x.strip() for x in docs)


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(iter_texts(str(FIXTURE), "train"), vocab_size=400)


@FUZZ
@given(st.text(max_size=200))
def test_fuzz_tokenizer_round_trip(bpe, text):
    ids = bpe.encode(text)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_checkpoint_loading(raw):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.safetensors"
        p.write_bytes(raw)
        with pytest.raises(ConfigError):
            checkpoint.load(p)
