"""Fuzzing (hypothesis): CLI arguments (stream options included), config files, configs, stream
names, model configs (built and run), the Hugging Face stream patch, corpus readers, tokenizer
and checkpoint loading never raise anything but the documented errors.

Two profiles: `ci` (the default) draws a fixed sequence of about 300 inputs in all;
`ATTNSTREAMS_FUZZ=deep` draws 10,350 new ones (the counts a target are in EXAMPLES)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from attnstreams.amicl import AMICLConfig
from attnstreams.cli import main
from attnstreams.data.corpus import iter_texts
from attnstreams.data.tokenizer import BPETokenizer
from attnstreams.experiments.icl.task import ICLTaskConfig
from attnstreams.experiments.icl.train import ICLTrainConfig
from attnstreams.experiments.lm.data import DataConfig
from attnstreams.experiments.lm.train import LMTrainConfig
from attnstreams.models.gpt import GPT, MLPS, NORMS, POSITIONS, GPTConfig, preset
from attnstreams.models.toy import ToyICLConfig
from attnstreams.run import checkpoint
from attnstreams.run.config import ConfigError
from attnstreams.streams import KINDS, MIXES, SOURCES, StreamConfig

EXAMPLES = {  # inputs a target: ci (derandomised, in the test suite) and deep
    "amicl_cli": (25, 800),
    "train_cli": (30, 1000),
    "every_verb": (45, 1500),
    "config_files": (20, 600),
    "config_dataclasses": (30, 1000),
    "corpus_readers": (20, 600),
    "tokenizer": (25, 800),
    "checkpoint_loading": (20, 600),
    "stream_names": (40, 2000),
    "gpt_configs": (25, 800),
    "hf_add_streams": (15, 500),
    "hf_folders": (5, 150),
}
PROFILE = os.environ.get("ATTNSTREAMS_FUZZ", "ci")
if PROFILE not in ("ci", "deep"):
    raise ValueError(f"ATTNSTREAMS_FUZZ must be ci or deep, got {PROFILE!r}")
_common = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.register_profile("fuzz-ci", derandomize=True, **_common)
settings.register_profile("fuzz-deep", derandomize=False, database=None, print_blob=True, **_common)


def fuzz(target: str) -> settings:
    """The settings of one target under the profile chosen."""
    n = EXAMPLES[target][PROFILE == "deep"]
    return settings(settings.get_profile(f"fuzz-{PROFILE}"), max_examples=n)


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


def _spellings() -> dict[str, StreamConfig]:
    """Every way of writing a stream, kind[-source][-mix] (a default spelled out or left out),
    and the stream it names."""
    out = {"none": StreamConfig()}
    for kind in KINDS[1:]:
        for source in ("", *SOURCES):
            for mix in ("", *MIXES):
                try:
                    cfg = StreamConfig(kind, source or "previous", mix or None)
                except ConfigError:
                    continue
                out["-".join(p for p in (kind, source, mix) if p)] = cfg
    return out


SPELLINGS = _spellings()
STREAMS = sorted({c.name for c in SPELLINGS.values()})
HF_STREAMS = [
    n for n in STREAMS if SPELLINGS[n].learned and SPELLINGS[n].source not in ("embed", "smear")
]
PIECES = [*KINDS, *SOURCES, *MIXES, "learned-per", "per-head", "gatd", "frist", "embedd", "Value",
          "VALUE", "values", "prev", "", " ", "-", "sum ", "0", "1", "first-first"]  # fmt: skip


def _edit(args: tuple[str, int, str, str]) -> str:
    """A valid name with one slip: a letter dropped, doubled, swapped or changed, a case,
    padding, a doubled or trailing hyphen."""
    name, i, how, ch = args
    i %= len(name)
    return {
        "drop": name[:i] + name[i + 1 :],
        "double": name[:i] + name[i] + name[i:],
        "change": name[:i] + ch + name[i + 1 :],
        "insert": name[:i] + ch + name[i:],
        "upper": name.upper(),
        "pad": f" {name}\t",
        "hyphens": name.replace("-", "--"),
        "trailing": name + "-",
        "prefix": ch + name,
    }[how]


stream_specs = st.one_of(
    st.sampled_from(STREAMS),
    st.sampled_from(sorted(SPELLINGS)),  # defaults spelled out: 'value-previous-sum'
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=4).map("-".join),  # near misses
    st.tuples(
        st.sampled_from(STREAMS),
        st.integers(0, 40),
        st.sampled_from(
            ["drop", "double", "change", "insert", "upper", "pad", "hyphens", "trailing", "prefix"]
        ),
        st.characters(codec="utf-8"),
    ).map(_edit),  # fmt: skip
    st.text(max_size=24),
)
# --stream / --variants: a name, a comma- or space-separated list of names, or anything
stream_values = st.one_of(
    stream_specs,
    st.lists(stream_specs, min_size=1, max_size=3).map(",".join),
    st.lists(st.sampled_from(STREAMS), min_size=1, max_size=3).map(" ".join),
    weird,
)


# --residual: a name (DenseFormer's dilation and period up to 5, a hyper-connection's expansion
# rate up to 5, AttnRes's block size up to 5 layers, more than some models have), or anything
residual_values = st.one_of(
    st.builds("denseformer-d{}-p{}".format, st.integers(0, 5), st.integers(0, 5)),
    st.builds("{}-n{}".format, st.sampled_from(["hc", "dhc", "mhc"]), st.integers(0, 5)),
    st.builds("attnres-b{}".format, st.integers(0, 5)),
    st.sampled_from(["plain", "denseformer", "denseformer-p2", "plain-d2", "hc", "dhc", "mhc"]),
    st.sampled_from(["hc-d2", "attnres", "attnres-n2", "hc-b2", "mudd", "mudd-n2", "mudd-b1"]),
    st.sampled_from(["muddvr", "muddvr-n2", "muddvr-d1"]),
    weird,
)


def flag_values(flags: list[str]) -> st.SearchStrategy[tuple[str, str]]:
    """(flag, value) pairs: stream and residual names for those options, weird values for all."""

    def values(flag: str) -> st.SearchStrategy[str]:
        if flag in ("--stream", "--variants"):
            return stream_values
        return residual_values if flag == "--residual" else weird

    return st.sampled_from(flags).flatmap(lambda f: st.tuples(st.just(f), values(f)))


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


def icl_grid_checks(variants, seeds, cfg=None, *a, **k):
    """In place of ICLGrid: every variant's stream through the toy model it would build (the
    model of one seed), then Stop."""
    from attnstreams.experiments.icl.train import init_model

    for v in variants:
        init_model(cfg or ICLTrainConfig(), v, 0)
    raise Stop


def call(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse: --help / bad usage
        return e.code


@fuzz("amicl_cli")
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


@fuzz("train_cli")
@given(
    st.sampled_from(["icl", "lm"]),
    st.lists(flag_values(TRAIN_FLAGS), min_size=1, max_size=5),
)
def test_fuzz_train_cli_validation(monkeypatch, capsys, verb, pairs):
    """Argument and config validation of the training verbs, --stream included (training
    itself stubbed out)."""
    import attnstreams.experiments.icl.train
    import attnstreams.experiments.lm.data

    monkeypatch.setattr(attnstreams.experiments.icl.train, "ICLGrid", icl_grid_checks)
    monkeypatch.setattr(attnstreams.experiments.lm.data, "prepare_data", stop)
    with tempfile.TemporaryDirectory() as out:
        argv = [verb, "train", "--out", out] + [x for p in pairs for x in p]
        try:
            code = call(argv)
        except Stop:
            code = 0  # everything validated; training would start here
    err = capsys.readouterr().err
    assert code in (0, 2), err
    assert "Traceback" not in err


VERBS = {  # argv prefix, the flags fuzzed (each with a weird value, or stream names)
    "amicl sweep": (["amicl", "sweep", "--trials", "20", "--values", "1,2"],
                    ["--over", "--values", "--similarity", "--a", "--length", "--method"]),
    "amicl attention": (["amicl", "attention"], ["--a", "--length", "--similarity", "--beta"]),
    "lm prepare": (["lm", "prepare", "--data-dir"], ["--names", "--copies", "--separator",
                   "--vocab-size", "--train-tokens", "--val-tokens", "--tokenizer", "--epochs"]),
    "lm grid": (["lm", "grid"], ["--workers", "--stack", "--seeds", "--stream", "--epochs",
                "--names", "--icl-positions", "--eval-batches", "--ioi-prompts", "--block-size",
                "--dropout", "--copies", "--separator", "--residual"]),
    "lm train": (["lm", "train"], ["--icl-positions", "--epochs", "--names", "--threads",
                 "--stop-after", "--parallel", "--nonfinite", "--preset", "--warmup",
                 "--stream", "--residual"]),
    "icl grid": (["icl", "grid"], ["--variants", "--seeds", "--init", "--eval-size"]),
    "lm eval": (["lm", "eval", "missing.safetensors"], ["--split", "--separator", "--device"]),
    "lm sample": (["lm", "sample", "missing.safetensors"], ["--top-k", "--temperature"]),
    "report": (["lm", "report"], []),
    "threads": (["--threads"], []),
}  # fmt: skip


@fuzz("every_verb")
@given(st.sampled_from(sorted(VERBS)), st.data())
def test_fuzz_every_verb(monkeypatch, capsys, verb, data):
    """Every verb's options once more: exit 0 or 2, never a traceback, one line on error (the
    work itself stubbed out once everything is validated)."""
    import attnstreams.experiments.icl.train
    import attnstreams.experiments.lm.data
    import attnstreams.experiments.lm.grid

    monkeypatch.setattr(attnstreams.experiments.icl.train, "ICLGrid", icl_grid_checks)
    monkeypatch.setattr(attnstreams.experiments.lm.data, "prepare_data", stop)
    monkeypatch.setattr(attnstreams.experiments.lm.grid, "run_grid", stop)
    prefix, flags = VERBS[verb]
    with tempfile.TemporaryDirectory() as d:
        argv = [x.replace("--data-dir", f"--data-dir={d}/data") for x in prefix]
        if flags:
            pairs = data.draw(st.lists(flag_values(flags), max_size=4))
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


@fuzz("config_files")
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
    import attnstreams.experiments.lm.data

    monkeypatch.setattr(attnstreams.experiments.lm.data, "prepare_data", stop)
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


@fuzz("config_dataclasses")
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


@fuzz("corpus_readers")
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


@fuzz("tokenizer")
@given(st.text(max_size=200))
def test_fuzz_tokenizer_round_trip(bpe, text):
    ids = bpe.encode(text)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text


@fuzz("checkpoint_loading")
@given(st.binary(max_size=300))
def test_fuzz_checkpoint_loading(raw):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "c.safetensors"
        p.write_bytes(raw)
        with pytest.raises(ConfigError):
            checkpoint.load(p)


# -- streams and models ---------------------------------------------------------------------------
@fuzz("stream_names")
@given(st.one_of(stream_specs, anything))
def test_fuzz_stream_names(spec):
    """A name is a stream or a one-line ConfigError; one that parses is one of the spellings of
    kind[-source][-mix] (a trailing '-' tolerated) and round-trips through its canonical name."""
    try:
        cfg = StreamConfig.parse(spec)
    except ConfigError as e:
        assert "\n" not in str(e)
        event("refused")
        return
    event("parsed")
    written = spec.strip()
    written = written[:-1] if written.endswith("-") else written
    assert SPELLINGS.get(written) == cfg, (spec, cfg)
    assert StreamConfig.parse(cfg.name) == cfg and cfg.name in STREAMS


small_int = st.sampled_from([1, 2, 3, 4])
odd_number = st.sampled_from([0, -1, 2.5, 2.0, True, "2", None, float("inf"), float("nan")])
GOOD = {  # every GPTConfig field: values that may well build, and values that must be refused
    "vocab_size": st.sampled_from([3, 17, 64, 100]),
    "block_size": st.sampled_from([2, 5, 16]),
    "n_layer": small_int,
    "n_head": st.sampled_from([1, 2, 4]),
    "n_kv_head": st.sampled_from([None, 1, 2, 4]),
    "n_embd": st.sampled_from([8, 12, 16, 24]),
    "dropout": st.sampled_from([0.0, 0.1]),
    "bias": st.booleans(),
    "stream": st.one_of(st.sampled_from(STREAMS), st.sampled_from(STREAMS).map(StreamConfig.parse)),
    "vocab_multiple": st.sampled_from([1, 8, 64]),
    "pos": st.sampled_from(POSITIONS),
    "rope_theta": st.sampled_from([10000.0, 500, 1e-3]),
    "norm": st.sampled_from(NORMS),
    "mlp": st.sampled_from(MLPS),
    "mlp_hidden": st.sampled_from([None, 5, 32]),
    "tie_embeddings": st.booleans(),
    "value_embed_layers": st.one_of(st.none(), st.lists(st.integers(0, 3), max_size=3).map(tuple)),
    "residual": st.sampled_from(
        [
            "plain",
            "denseformer-d2",
            "hc-n2",
            "dhc",
            "mhc-n1",
            "mhc-n3",
            "attnres",
            "attnres-b1",
            "mudd",
            "muddvr",
        ]
    ),
}
ODD = {name: odd_number for name in GOOD} | {
    "dropout": st.sampled_from([-0.1, 1.5, float("nan"), "0.1", None, True]),
    "bias": st.sampled_from([None, "no", 1, 0, 0.5]),
    "tie_embeddings": st.sampled_from([None, "yes", 1, 0]),
    "stream": st.one_of(stream_specs, anything),
    "pos": st.sampled_from(["", "RoPE", None, "alibi", 1]),
    "norm": st.sampled_from(["", "LayerNorm", None, "batchnorm"]),
    "mlp": st.sampled_from(["", "relu", None, "SwiGLU"]),
    "value_embed_layers": st.sampled_from(
        ["0", (0.5,), (True,), (-1,), (0, 0), (), [1, 2], 3, (99,), (None,)]
    ),  # fmt: skip
    "residual": st.one_of(residual_values, anything),
}
TINY_BASE = dict(vocab_size=64, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0)


@st.composite
def gpt_overrides(draw) -> tuple[str, dict]:
    """(how it is made: GPTConfig or a preset, the fields set): mostly plausible values, one
    odd one now and then."""
    via = draw(st.sampled_from(["GPTConfig", "tiny", "modern-tiny"]))
    fields = ["stream", *draw(st.lists(st.sampled_from(sorted(GOOD)), unique=True, max_size=6))]
    fields = list(dict.fromkeys(fields))
    odd = draw(st.sets(st.sampled_from(fields), max_size=1))
    return via, {f: draw(ODD[f] if f in odd else GOOD[f]) for f in fields}


@fuzz("gpt_configs")
@given(gpt_overrides())
def test_fuzz_gpt_configs_build_and_run(made):
    """GPTConfig(...) / preset(...) with random streams, GQA, value-embedding layers and block
    choices: a one-line ConfigError, or a model whose forward pass, loss and cached decoding
    run on a tiny input."""
    via, kw = made
    try:
        cfg = GPTConfig(**(TINY_BASE | kw)) if via == "GPTConfig" else preset(via, **kw)
    except ConfigError as e:
        assert "\n" not in str(e)
        event("refused")
        return
    event(f"built: {cfg.stream.name}")
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    T = min(cfg.block_size, 5)
    idx = torch.randint(cfg.vocab_size, (2, T), generator=torch.Generator().manual_seed(0))
    logits, loss = model(idx, idx)
    assert logits.shape == (2, T, cfg.vocab_size) and torch.isfinite(loss)
    if cfg.block_size >= 2:
        assert model.generate(idx[:, :1], 1, temperature=0).shape == (2, 2)


def _hf_model(transformers, family: str, layers: int, heads: int, kv: int, hidden: int,
              head_dim: int | None):  # fmt: skip
    common = dict(vocab_size=64, tie_word_embeddings=True)
    if family == "gpt2":
        cfg = transformers.GPT2Config(
            n_positions=16, n_embd=hidden, n_layer=layers, n_head=heads, resid_pdrop=0.0,
            embd_pdrop=0.0, attn_pdrop=0.0, **common,
        )  # fmt: skip
        make = transformers.GPT2LMHeadModel
    else:
        cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig}[family]
        extra = {} if head_dim is None else {"head_dim": head_dim}
        cfg = cls(
            hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=16,
            **extra, **common,
        )  # fmt: skip
        make = {"llama": transformers.LlamaForCausalLM,
                "mistral": transformers.MistralForCausalLM}[family]  # fmt: skip
    torch.manual_seed(0)
    return make(cfg).eval()


HF_OPTIONS = [(), (), (), ("twice",), ("not-a-model",), ("gradient-checkpointing",),
              ("twice", "not-a-model")]  # fmt: skip
HF_IDX = torch.randint(64, (2, 6), generator=torch.Generator().manual_seed(1))
# the names add_streams takes, twice as often as any other name or a near miss
hf_streams = st.one_of(
    st.sampled_from(HF_STREAMS), st.sampled_from(HF_STREAMS), st.sampled_from(STREAMS), stream_specs
)


@fuzz("hf_add_streams")
@given(
    family=st.sampled_from(["llama", "mistral", "gpt2"]),
    layers=st.sampled_from([1, 2, 2, 3, 3]),
    heads=st.sampled_from([2, 4]),
    kv_div=st.sampled_from([1, 2]),
    hidden=st.sampled_from([16, 32]),
    head_dim=st.sampled_from([None, 4, 8]),
    stream=hf_streams,
    options=st.sampled_from(HF_OPTIONS),
)
def test_fuzz_hf_add_streams(family, layers, heads, kv_div, hidden, head_dim, stream, options):
    """add_streams on tiny transformers models with random stream names and options: a
    one-line ConfigError that leaves the model as it was, or a patched model whose logits
    equal the unpatched model's (the mix starts at (1, 0))."""
    transformers = pytest.importorskip("transformers")
    from attnstreams.models.hf import CONFIG_KEY, add_streams, stream_state

    if "not-a-model" in options:
        with pytest.raises(ConfigError):
            add_streams(torch.nn.Linear(2, 2), stream)
    model = _hf_model(transformers, family, layers, heads, heads // kv_div, hidden, head_dim)
    if "gradient-checkpointing" in options:  # transformers 5: activation_; 4: gradient_
        enable = getattr(model, "activation_checkpointing_enable", None)
        (enable or model.gradient_checkpointing_enable)()
    with torch.no_grad():
        before = model(HF_IDX).logits
    try:
        add_streams(model, stream)
    except ConfigError as e:
        assert "\n" not in str(e)
        event("refused")
        assert not stream_state(model) and not getattr(model.config, CONFIG_KEY, None)
        with torch.no_grad():
            assert torch.equal(model(HF_IDX).logits, before)  # no hook left behind
        return
    cfg = StreamConfig.parse(stream)
    event(f"patched {family}")
    assert cfg.learned and "gradient-checkpointing" not in options and layers >= 2
    assert getattr(model.config, CONFIG_KEY) == cfg.name
    assert len(stream_state(model)) == layers - 1
    if "twice" in options:
        with pytest.raises(ConfigError, match="already has a stream"):
            add_streams(model, stream)
    with torch.no_grad():
        assert torch.equal(model(HF_IDX).logits, before)


class Saved(dict):
    """Folder and logits by name (its repr short: hypothesis prints it with a failure)."""

    def __repr__(self) -> str:
        return f"Saved({', '.join(self)})"


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    """Saved tiny models: llama and gpt2 without a stream, llama with value-learned (its mix
    moved off the start), and the logits each computes."""
    transformers = pytest.importorskip("transformers")
    from attnstreams.models.hf import add_streams

    root = tmp_path_factory.mktemp("hf")
    out = Saved()
    for name, family in [("llama", "llama"), ("gpt2", "gpt2"), ("streamed", "llama")]:
        model = _hf_model(transformers, family, 3, 4, 2, 32, None)
        if name == "streamed":
            add_streams(model, "value-learned")
            with torch.no_grad():
                for k, p in model.named_parameters():
                    if k.endswith("stream_mix"):
                        p[1] = 0.5
        model.save_pretrained(root / name)
        with torch.no_grad():
            out[name] = (root / name, model(HF_IDX).logits)
    return out


@fuzz("hf_folders")
@given(
    which=st.sampled_from(["llama", "gpt2", "streamed"]),
    stream=st.one_of(st.sampled_from(["none", "value-learned"]), hf_streams),
    block_size=st.one_of(st.none(), st.integers(1, 16), st.integers(-3, 40), odd_number),
)
def test_fuzz_hf_folders(hf_folders, which, stream, block_size):
    """HFCausalLM (what `lm train --init-from` builds) on saved tiny models, with random
    streams and block sizes: a one-line ConfigError, or a model that computes what the saved
    one did, with a usable block size."""
    from attnstreams.models.hf import HFCausalLM

    folder, logits = hf_folders[which]
    try:
        model = HFCausalLM(folder, stream, block_size)
    except ConfigError as e:
        assert "\n" not in str(e)
        event("refused")
        return
    event(f"loaded {which}")
    assert isinstance(model.cfg.block_size, int) and 1 <= model.cfg.block_size <= 16
    with torch.no_grad():
        assert torch.equal(model(HF_IDX)[0], logits)


# -- what the fuzzing found (fixed) ------------------------------------------------------------
@pytest.mark.parametrize("spec", ["value-first-embed", "value-previous-first", "value-first--sum"])
def test_a_stream_name_has_one_source(spec):
    """They were read as value-embed and value-first: a second source replaced the first."""
    with pytest.raises(ConfigError, match="stream mix must be one of"):
        StreamConfig.parse(spec)


@pytest.mark.parametrize(
    "bad",
    [{"n_layer": 2.5}, {"block_size": 8.0}, {"n_kv_head": 1.0}, {"mlp_hidden": 2.5},
     {"vocab_multiple": True}, {"bias": "no"}, {"tie_embeddings": None}],
)  # fmt: skip
def test_gpt_config_sizes_are_whole_numbers_and_switches_booleans(bad):
    """Floats passed the range checks and failed inside torch (TypeError) when the model was
    built; bias='no' was read as True."""
    with pytest.raises(ConfigError, match="whole number|true or false"):
        GPTConfig(**(TINY_BASE | bad))


def test_gpt_config_takes_a_value_embed_stream_by_name_with_its_layers():
    """value_embed_layers was checked against the stream before a name was parsed
    (AttributeError: 'str' object has no attribute 'source')."""
    cfg = GPTConfig(**TINY_BASE, stream="value-embed", value_embed_layers=(1,))
    assert cfg.stream == StreamConfig("value", "embed") and cfg.value_embed_layers == (1,)
    GPT(cfg)(torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize("block_size", [-1, 0, 2.5, "8"])
def test_hf_model_block_size_must_be_a_positive_whole_number(hf_folders, block_size):
    """-1 was taken as the block size; '8' raised TypeError."""
    from attnstreams.models.hf import HFCausalLM

    with pytest.raises(ConfigError, match="block_size"):
        HFCausalLM(hf_folders["llama"][0], "none", block_size)
