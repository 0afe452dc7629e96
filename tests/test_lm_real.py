"""The real-text LM path: name resampling, the held-out split, bits per byte, streaming
tokenisation, the optimizer's decay groups, per-rank dropout, and the report's alignment."""

from __future__ import annotations

import json
import math
import random
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from attnstreams.cli import main
from attnstreams.data import names as N
from attnstreams.data.corpus import in_validation, iter_texts
from attnstreams.data.shards import TokenWindows, write_tokens
from attnstreams.data.tokenizer import BPETokenizer
from attnstreams.experiments.lm import data as lm_data
from attnstreams.experiments.lm import train as lm
from attnstreams.experiments.lm.data import DataConfig, prepare_data
from attnstreams.experiments.lm.evals import heldout_loss
from attnstreams.experiments.lm.report import first_step, write_report
from attnstreams.experiments.lm.train import (
    LMTrainConfig,
    LMTrainer,
)
from attnstreams.models.gpt import GPT, preset
from attnstreams.run import parallel

FIXTURE = Path(__file__).parent / "fixtures" / "tinystories-sample.txt"


# -- name resampling ---------------------------------------------------------------------------
def test_resampling_is_consistent_within_a_story_and_keeps_gender():
    story = (
        'Lily and Tom went out. Lily saw a dog. Tom said, "Lily, look!" '
        "Later Sue met Lily and Tom. Lilyanne is not a name on the list; Tommy is."
    )
    out = N.resample_names(story, random.Random(0))
    names_in = N.find_names(story)
    assert names_in == ["Lily", "Tom", "Lily", "Tom", "Lily", "Sue", "Lily", "Tom", "Tommy"]
    got = N.find_names(out)
    assert len(got) == len(names_in)
    mapping = dict(zip(names_in, got, strict=True))
    # same name -> same replacement, everywhere in the story
    assert all(mapping[a] == b for a, b in zip(names_in, got, strict=True))
    assert len(set(mapping.values())) == len(mapping)  # two names never collapse into one
    assert all(N.GENDER[a] == N.GENDER[b] for a, b in mapping.items())
    assert not set(got) & set(N.HELD_OUT)  # held-out names are never used
    assert "Lilyanne" in out  # whole words only
    assert re.sub(r"[A-Z][a-z]+", "X", out) == re.sub(r"[A-Z][a-z]+", "X", story)


def test_names_are_found_as_whole_words_like_an_alternation_of_the_list():
    """find_names reads words and looks them up: the same matches as the whole-word
    alternation of every list name it replaced, also next to digits, _, ' and -."""
    assert all(re.fullmatch(r"[A-Za-z]+", n) for n in N.GENDER)  # what the lookup relies on
    alternation = re.compile(r"\b(" + "|".join(sorted(N.GENDER, key=len, reverse=True)) + r")\b")
    texts = [
        "Tom's hat, Tom_ and _Tom, Tom2 2Tom, Tom-Lily, McTom, TOM, tom, Jackie, Jack.",
        "Lily\nTom\tSue...Ben!Mia?",
        *FIXTURE.read_text().split("<|endoftext|>")[:200],
    ]
    for text in texts:
        assert N.find_names(text) == alternation.findall(text)
        rng_a, rng_b = random.Random(1), random.Random(1)
        found = dict.fromkeys(alternation.findall(text))
        mapping = {}
        for g in ("f", "m"):
            mine = [n for n in found if N.GENDER[n] == g]
            if mine:
                mapping |= dict(zip(mine, rng_b.sample(N.POOL[g], len(mine)), strict=True))
        want = alternation.sub(lambda m, mapping=mapping: mapping[m.group(1)], text)
        assert N.resample_names(text, rng_a) == want


def test_name_lists():
    assert len(N.FEMALE) > 150 and len(N.MALE) > 150 and not set(N.FEMALE) & set(N.MALE)
    assert not set(N.HELD_OUT) & set(N.POOL["f"] + N.POOL["m"])
    assert 0.1 < len(N.HELD_OUT) / len(N.GENDER) < 0.3
    assert not N.AMBIGUOUS & set(N.GENDER)  # "Rose", "Will", "May" are never touched


def test_prepare_resampled_copies(tmp_path):
    """Each copy renames the train split afresh; the validation split is renamed once; the
    IOI names are the held-out names, which no training text contains. Copies made in worker
    processes give the files one process gives."""
    cfg = DataConfig(
        data=str(FIXTURE),
        vocab_size=400,
        train_tokens=None,
        val_tokens=5000,
        names="resampled",
        copies=3,
    )
    d = prepare_data(cfg, tmp_path / "d", progress=False, workers=2)  # copies in 2 processes
    meta = json.loads((d / "train.json").read_text())
    assert meta["copies"] == 3 and meta["names"] == "resampled"
    one = prepare_data(cfg, tmp_path / "one", progress=False, workers=1)  # the same files
    for f in ("train.bin", "train.json", "validation.bin", lm.IOI_VOCAB, "tokenizer.json"):
        assert (one / f).read_bytes() == (d / f).read_bytes(), f
    tok = lm_data.load_tokenizer(d)
    text = tok.decode(TokenWindows(d / "train.bin").tokens.tolist())
    copies = text.split("<|endoftext|>")
    n = len(copies) // 3
    a, b = copies[:n], copies[n : 2 * n]
    assert a != b and [re.sub(r"[A-Z][a-z]+", "X", s) for s in a] == [
        re.sub(r"[A-Z][a-z]+", "X", s) for s in b
    ]  # the same stories, other names
    assert not set(N.find_names(text)) & set(N.HELD_OUT)
    vocab = json.loads((d / lm.IOI_VOCAB).read_text())
    assert vocab["setting"] == "resampled" and vocab["names"] == list(N.HELD_OUT)
    with pytest.raises(lm.ConfigError, match="copies > 1 needs"):
        DataConfig(copies=2)
    with pytest.raises(lm.ConfigError, match="train_tokens None"):
        DataConfig(data="x.txt", names="resampled", copies=2)


def test_one_data_folder_is_prepared_once_and_its_tokenizer_checked(tmp_path):
    """A second prepare into a folder waits for the first, then reuses its files or refuses
    naming what differs; a tokenizer replaced beside the token files is refused on read; a
    prepare that fails leaves no folder."""
    import threading

    from attnstreams.experiments.lm.data import data_tokenizer
    from attnstreams.run.logs import locked

    cfg = DataConfig(data=str(FIXTURE), vocab_size=400, train_tokens=20_000, val_tokens=5000)
    d = tmp_path / "d"
    done = threading.Event()
    with locked(d):  # as if another `lm prepare` were writing the folder
        t = threading.Thread(target=lambda: (prepare_data(cfg, d, progress=False), done.set()))
        t.start()
        assert not done.wait(0.5)  # it waits for the lock
    t.join(60)
    assert done.is_set() and (d / "data_config.json").is_file()
    made = (d / "train.bin").read_bytes()
    assert prepare_data(cfg, d, progress=False) == d and (d / "train.bin").read_bytes() == made
    other = DataConfig(**{**cfg.__dict__, "vocab_size": 512})
    with pytest.raises(lm.ConfigError, match=r"another data config \(vocab_size: 400 -> 512\)"):
        prepare_data(other, d, progress=False)
    assert (d / "train.bin").read_bytes() == made
    data_tokenizer(d)  # the tokenizer its tokens were made with
    e = prepare_data(other, tmp_path / "e", progress=False)
    (d / "tokenizer.json").write_bytes((e / "tokenizer.json").read_bytes())
    with pytest.raises(lm.ConfigError, match="not the one its train tokens were made with"):
        LMTrainer(LMTrainConfig(preset="tiny", steps=2, batch=2, ioi_prompts=4), d)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a story"}\n{not json\n')
    with pytest.raises(lm.ConfigError):
        prepare_data(DataConfig(data=str(bad), train_tokens=2000), tmp_path / "f", False)
    assert not (tmp_path / "f").exists()
    # lm train on it: its run folder, made before the data, goes too
    argv = [
        "lm",
        "train",
        "--data",
        str(bad),
        "--train-tokens",
        "2000",
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 2 and not (tmp_path / "r").exists()
    # a --data-dir that cannot be made (under a file): one line, and no run folder left
    (tmp_path / "a-file").write_text("")
    data_dir = str(tmp_path / "a-file" / "tokens")
    argv = [
        "lm",
        "train",
        "--data",
        str(FIXTURE),
        "--data-dir",
        data_dir,
        "--out",
        str(tmp_path / "r2"),
    ]
    assert main(argv) == 1 and not (tmp_path / "r2").exists()


def test_original_setting_reads_ioi_names_from_the_train_text(tmp_path):
    cfg = DataConfig(data=str(FIXTURE), vocab_size=400, train_tokens=None, val_tokens=5000)
    d = prepare_data(cfg, tmp_path / "d", progress=False)
    vocab = json.loads((d / lm.IOI_VOCAB).read_text())
    train = " ".join(iter_texts(str(FIXTURE), "train"))
    for name in vocab["names"]:
        assert len(re.findall(rf"\b{name}\b", train)) >= lm_data.MIN_COUNT
    assert "Lily" in vocab["names"]
    val = " ".join(iter_texts(str(FIXTURE), "validation"))
    counted = [n for n in N.GENDER if len(re.findall(rf"\b{n}\b", train + " " + val)) >= 20]
    assert sorted(vocab["names"]) == sorted(
        n for n in counted if len(re.findall(rf"\b{n}\b", train)) >= 20
    )


# -- held-out loss reads the validation split ----------------------------------------------------
def test_heldout_loss_reads_the_validation_split(tmp_path):
    """`lm eval --data` / `--real-eval` used the train split: a model could be scored on its
    training text. Here validation stories say one thing and train stories another."""
    val = [t for i in range(400) if in_validation(t := f"zebra quilt {i} zebra quilt.")][:8]
    train = [t for i in range(40) if not in_validation(t := f"the cat sat {i} on the mat.")]
    assert len(val) == 8
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("<|endoftext|>".join(train + val))
    only_val = tmp_path / "val.txt"
    only_val.write_text("<|endoftext|>".join(val))
    tok = BPETokenizer.train(train + val, 300)
    torch.manual_seed(0)
    model = GPT(preset("tiny", vocab_size=tok.vocab_size, block_size=16))
    got = heldout_loss(model, tok, str(mixed), 16, "cpu")
    assert got == heldout_loss(model, tok, str(only_val), 16, "cpu", split="all")
    assert got != heldout_loss(model, tok, str(mixed), 16, "cpu", split="train")
    empty = tmp_path / "train-only.txt"
    empty.write_text("<|endoftext|>".join(train))
    with pytest.raises(lm.ConfigError, match="no validation documents"):
        heldout_loss(model, tok, str(empty), 16, "cpu")


# -- bits per byte, streaming --------------------------------------------------------------------
def test_token_files_count_bytes_for_bits_per_byte(tmp_path):
    tok = BPETokenizer.train(iter_texts(str(FIXTURE), "train"), 400)
    docs = list(iter_texts(str(FIXTURE), "all"))
    n = write_tokens(docs, tok, tmp_path / "t.bin", progress=False)
    w = TokenWindows(tmp_path / "t.bin")
    assert w.meta["bytes"] == sum(len(d.encode("utf-8")) for d in docs)
    assert w.tokens_per_byte == pytest.approx(n / w.meta["bytes"])
    # cut inside a document: that document's bytes in proportion to its tokens kept
    first = len(tok.encode(docs[0])) + 1
    write_tokens(docs, tok, tmp_path / "c.bin", max_tokens=first + 10, progress=False)
    cut = TokenWindows(tmp_path / "c.bin").meta
    part = round(len(docs[1].encode()) * 10 / (len(tok.encode(docs[1])) + 1))
    assert cut["tokens"] == first + 10 and cut["bytes"] == len(docs[0].encode()) + part


def test_tokenisation_streams_in_bounded_memory(tmp_path):
    """Memory does not grow with the corpus (files in the dataset's own format): the full-data
    recipe tokenises ~470M tokens this way. Peak traced memory for a corpus three times larger
    stays that of one read block and one batch of documents."""
    stories = list(iter_texts(str(FIXTURE), "all"))
    tok = BPETokenizer.train(stories, 400)
    peaks, sizes = [], []
    for copies in (30, 90):
        big = tmp_path / f"TinyStories-{copies}.txt"
        with big.open("w") as f:
            for i in range(copies):
                for s in stories:
                    f.write(f"{s} ({i})\n<|endoftext|>\n")
        tracemalloc.start()
        n = write_tokens(iter_texts(str(big), "all"), tok, tmp_path / "t.bin", batch=128,
                         progress=False)  # fmt: skip
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        sizes.append(big.stat().st_size)
        assert n > 100_000 * copies // 30
    assert sizes[1] > 4_000_000
    assert peaks[1] < 1.25 * peaks[0], peaks  # bounded: 3x the corpus, not 3x the memory
    assert peaks[1] < 16_000_000, peaks  # one 1 MiB read block and one batch, whatever the size


# -- the trainer -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    cfg = DataConfig(data=str(FIXTURE), vocab_size=400, train_tokens=None, val_tokens=5000)
    return prepare_data(cfg, tmp_path_factory.mktemp("d"), progress=False)


@pytest.mark.parametrize("stream", ["value-learned", "value-learned-per-head"])
def test_no_stream_mix_is_decayed(data_dir, stream):
    """AdamW decayed the per-head mix (shape (2, H, 1, 1), dim >= 2) but not the per-layer
    one: a mix is a gate, not a weight matrix; neither decays now."""
    cfg = LMTrainConfig(preset="tiny", stream=stream, steps=2, batch=2, ioi_prompts=4)
    t = LMTrainer(cfg, data_dir)
    decayed = {id(p) for p in t.opt.param_groups[0]["params"]}
    assert t.opt.param_groups[0]["weight_decay"] == cfg.weight_decay
    assert t.opt.param_groups[1]["weight_decay"] == 0.0
    mixes = [(n, p) for n, p in t.model.named_parameters() if "stream_mix" in n]
    assert mixes and not any(id(p) in decayed for _, p in mixes)
    matrices = [p for n, p in t.model.named_parameters() if p.dim() >= 2 and "stream_mix" not in n]
    assert all(id(p) in decayed for p in matrices)


def test_ranks_share_initial_weights_but_not_dropout(data_dir, monkeypatch):
    """Every rank seeded torch alike, so all ranks dropped the same units."""
    monkeypatch.setattr(parallel, "wrap", lambda model, *a, **k: model)
    cfg = LMTrainConfig(preset="tiny", steps=2, batch=4, dropout=0.1, ioi_prompts=4)
    masks, weights = [], []
    for rank in (0, 1):
        t = LMTrainer(cfg, data_dir, dist=parallel.Dist(rank=rank, world=2))
        weights.append(t.model.state_dict())
        masks.append(torch.nn.functional.dropout(torch.ones(1000), 0.5))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.equal(masks[0], masks[1])
    # rank 0 keeps the single-process stream: a one-process run is unchanged
    torch.manual_seed(cfg.seed)
    GPT(cfg.model_config(400))
    assert torch.equal(torch.nn.functional.dropout(torch.ones(1000), 0.5), masks[0])


def test_ioi_set_comes_from_the_data_folder(data_dir):
    cfg = LMTrainConfig(preset="tiny", steps=2, batch=2, ioi_prompts=64)
    t = LMTrainer(cfg, data_dir)
    vocab = json.loads((data_dir / lm.IOI_VOCAB).read_text())
    assert set(t.ioi_names) <= set(vocab["names"]) and len(t.ioi_set) == 64
    assert {p.io for p in t.ioi_set} <= set(vocab["names"])
    again = LMTrainer(LMTrainConfig(**{**cfg.__dict__, "seed": 5}), data_dir)
    assert [p.text for p in again.ioi_set] == [p.text for p in t.ioi_set]  # one set for all


def test_evaluation_reports_bits_per_byte_and_story_metrics(data_dir):
    cfg = LMTrainConfig(preset="tiny", steps=2, batch=4, eval_batches=0, ioi_prompts=16)
    t = LMTrainer(cfg, data_dir)
    out = t.evaluate()
    per_byte = TokenWindows(data_dir / "validation.bin").tokens_per_byte
    assert out["val_bpb"] == pytest.approx(out["val_loss"] * per_byte / math.log(2))
    assert (t.icl_early, t.icl_late) == (20, 127)  # clipped to the 128-token context
    assert out["icl_stories"] == len(t.icl_stories) > 0
    assert {"context_gain", "prefix_matching", "ioi_by_template"} <= set(out)


def test_epochs_set_the_steps(data_dir):
    cfg = LMTrainConfig(preset="tiny", epochs=2.5, batch=4, block_size=32)
    tokens = json.loads((data_dir / "train.json").read_text())["tokens"]
    assert lm.with_epochs(cfg, data_dir).steps == math.ceil(2.5 * tokens / (4 * 32))
    with pytest.raises(lm.ConfigError, match="epochs"):
        LMTrainConfig(epochs=0)


# -- the report --------------------------------------------------------------------------------
def _fake_run(folder: Path, stream: str, seed: int, steps: list[int], ioi: list[float], total=40):
    run = folder / f"{stream}-s{seed}"
    run.mkdir(parents=True)
    cfg = LMTrainConfig(preset="tiny", stream=stream, seed=seed, steps=total)
    model = {"vocab_size": 400}
    (run / "config.json").write_text(json.dumps({"config": cfg.__dict__, "model": model}))
    rows = [
        {"step": s, "tokens": s * 100, "val_loss": 3.0 - s / 100 - (0.1 if stream != "none" else 0)}
        | {"ioi_accuracy": a, "induction_score": 0.1}
        for s, a in zip(steps, ioi, strict=True)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_report_compares_arms_at_a_step_all_reached(tmp_path):
    """`lm report` compared last rows without checking the steps: a run stopped early was
    compared with finished ones. Now each arm is compared at the last common step."""
    steps = [0, 10, 20, 30, 40]
    for seed in range(5):
        _fake_run(tmp_path, "none", seed, steps, [0.5, 0.5, 0.55, 0.62, 0.65])
        short = steps[:4] if seed == 2 else steps  # value, seed 2: stopped at step 30
        ioi = [0.5, 0.7, 0.7, 0.7, 0.7][: len(short)]
        _fake_run(tmp_path, "value", seed, short, ioi)
    text = write_report(tmp_path).read_text()
    assert "value 4/5" in text and "none 5/5" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| held-out loss (nats/token)"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[3] == "30" and cells[4] == "5"  # the step every run reached, all 5 seeds
    assert cells[7].startswith("-0.100")
    # IOI > 0.6 twice in a row: value from step 10 in every seed, none from step 30
    assert "| IOI accuracy > 0.6 | value | 5/5 | 10 | 5 / 0 / 0 |" in text
    assert first_step([{"step": 0, "x": 0.7}, {"step": 5, "x": 0.5}], "x", 0.6, 2) is None


def test_report_counts_seeds_each_way_and_gives_single_runs_range(tmp_path):
    """A mean below the baseline was read as "lower in every seed", and arm means as where runs
    end: the report counts the seeds each way and gives the range of single runs."""
    steps = [0, 10, 20]
    for seed, (ioi, off) in enumerate([(0.40, 0.001), (0.45, -0.02), (0.52, -0.03)]):
        _fake_run(tmp_path, "none", seed, steps, [0.5, 0.55, 0.48], total=20)
        _fake_run(tmp_path, "value", seed, steps, [0.5, 0.58, ioi], total=20)
        metrics = tmp_path / f"value-s{seed}" / "metrics.jsonl"
        rows = [json.loads(ln) for ln in metrics.read_text().splitlines()]
        rows[-1]["val_loss"] = 2.8 + off  # none's last loss is 2.8: above in seed 0 only
        metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = write_report(tmp_path).read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| held-out loss (nats/token)"))
    assert row.endswith("| 2 / 1 |")
    assert "highest at any evaluation 0.580; runs end at 0.400 to 0.520)" in text


def test_report_refuses_a_folder_of_other_runs(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"variant": "none"}}))
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    assert main(["lm", "report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a run of `lm train`" in err and len(err.strip().splitlines()) == 1


# -- the command line ----------------------------------------------------------------------------
def test_lm_prepare_and_threads(tmp_path, capsys):
    args = ["lm", "prepare", "--data", str(FIXTURE), "--vocab-size", "400", "--train-tokens", "0"]
    assert main([*args, "--val-tokens", "5000", "--data-dir", str(tmp_path / "d"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train"]["bytes"] > 0 and (tmp_path / "d" / "tokenizer.json").exists()
    assert main(["--threads", "0", *args, "--data-dir", str(tmp_path / "e")]) == 2
    assert "threads" in capsys.readouterr().err and not (tmp_path / "e").exists()
    assert main(["--threads", "1", "lm", "prepare", "--data-dir", str(tmp_path / "d"),
                 *args[2:], "--val-tokens", "5000"]) == 0  # fmt: skip
    assert torch.get_num_threads() == 1


def test_report_ranks_three_arms_against_the_baseline_and_the_value_stream(tmp_path):
    """3 arms or more: each measure's arms best first, each paired with none and with value,
    and each ability's onset against both; 2 arms: neither (the comparison says it all)."""
    steps, rng = [0, 10, 20, 30, 40], np.random.default_rng(0)
    for seed in range(5):
        _fake_run(tmp_path, "none", seed, steps, [0.5, 0.5, 0.55, 0.6, 0.6])
        _fake_run(tmp_path, "value", seed, steps, [0.5, 0.6, 0.7, 0.7, 0.7])  # loss - 0.1
    two = write_report(tmp_path).read_text()
    assert "## Ranking" not in two and "vs value" not in two
    assert not (tmp_path / "ranking.png").exists()
    for seed in range(5):
        _fake_run(tmp_path, "key-smear", seed, steps, [0.5, 0.5, 0.5, 0.5, 0.55])
        metrics = tmp_path / f"key-smear-s{seed}" / "metrics.jsonl"
        rows = [json.loads(ln) for ln in metrics.read_text().splitlines()]
        for r in rows:  # 0.2 below none, 0.1 below value, give or take a little
            r["val_loss"] -= 0.1 + 0.01 * rng.standard_normal()
        metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = write_report(tmp_path).read_text()
    assert "![ranking](ranking.png)" in text and (tmp_path / "ranking.png").stat().st_size > 0
    table = [
        ln for ln in text.split("## Ranking")[1].split("##")[0].splitlines() if ln[:3] == "| h"
    ]
    loss = [[c.strip() for c in ln.split("|")[1:-1]] for ln in table]
    assert [(r[1], r[2], r[3]) for r in loss] == [("1", "key-smear", "5"), ("2", "value", "5"),
                                                  ("3", "none", "5")]  # fmt: skip
    first = [float(loss[0][i].split()[0]) for i in (5, 6)]  # vs none, vs value
    assert first == pytest.approx([-0.2, -0.1], abs=0.02) and loss[0][5].endswith("p 0.0625")
    assert loss[1][6] == "–" and loss[2][5] == "–" and loss[2][6].startswith("+0.100 [")
    # and when: value shows IOI > 0.6 from step 20 in every seed, key-smear never
    one = text.split("## In one table")[1].split("\n## ")[0].splitlines()
    rows = [[c.strip() for c in ln.split("|")] for ln in one if ln.startswith("| ")]
    col = rows[0].index("IOI accuracy > 0.6: runs, median step")
    ioi = {r[1]: r[col] for r in rows[1:]}
    assert (ioi["value"], ioi["none"], ioi["key-smear"]) == ("5/5, 20", "0/5", "0/5")
    assert "| key-smear | 0/5 | – | 0 / 0 / 5 | – | no bound" in text
    assert text.count("| 0 / 5 / 0 | 0.0625 |") == 2  # key-smear and none later than value
    section = text.split("## Ranking")[1].split("\n## ")[0]
    ioi = [ln for ln in section.splitlines() if ln.startswith("| IOI acc")]
    assert [ln.split("|")[3].strip() for ln in ioi] == ["value", "none", "key-smear"]


def test_report_compares_arms_at_equal_gpu_time(tmp_path, capsys):
    """`--cost`: an arm twice as slow a step is read at half the baseline's steps (same time),
    interpolated between evaluations; a cost file missing an arm is refused in one line."""
    steps = [0, 10, 20, 30, 40]
    for seed in range(5):  # val_loss = 3 - step/100 (none), 0.1 lower (value, value-first)
        for arm in ("none", "value", "value-first"):
            _fake_run(tmp_path, arm, seed, steps, [0.5] * 5)

    def timed(stream, ms, mode="compile", preset="tiny", model="attnstreams", vocab=400):
        row = {"preset": preset, "stream": stream, "model": model, "mode": mode, "vocab": vocab}
        return row | ({"ms_per_step": ms} if ms else {})

    rows = [timed("none", 10.0), timed("value", 20.0), timed("none", 10.0)]
    rows += [timed("value-first", 5.0, "eager")]  # another mode: not mixed with the others
    for r, gb, params in zip(rows[:3], (1.0, 1.5, 1.2), (100, 100, 100), strict=True):
        r |= {"peak_gb": gb, "params": params}  # none's two rows average to 1.1 GB
    rows += [
        timed("value-first", 8.0) | {"peak_gb": 1.1, "params": 132},
        timed("x", 1.0, model="x"),
        timed("none", 0, preset="gpt2-124m"),
        timed("value", 1.0, vocab=50257),  # another vocabulary than the runs': not used
    ]
    cost = tmp_path / "cost.json"
    cost.write_text(json.dumps(rows))
    text = write_report(tmp_path, cost=cost).read_text()
    section = text.split("## At equal GPU time")[1].split("\n## ")[0]
    loss = {
        c[2]: c for ln in section.splitlines() if ln.startswith("| held-out loss")
        for c in [[x.strip() for x in ln.split("|")]]
    }  # fmt: skip
    # value: 2x a step, so none's 40 steps take the time of 20 of value's: 2.6 against 2.7
    assert loss["value"][3:7] == ["2.000", "5", "40", "20"]
    assert loss["value"][9].startswith("+0.100") and loss["value"][10] == "0.0625"
    # value-first: 0.8x, so its 40 steps take the time of 32 of none's: read at 32 and 40
    assert loss["value-first"][3:7] == ["0.800", "5", "32", "40"]
    assert float(loss["value-first"][7].split()[0]) == pytest.approx(3 - 0.32)
    assert float(loss["value-first"][8].split()[0]) == pytest.approx(3 - 0.4 - 0.1)
    # in one table: each arm's Δ and rank at equal tokens (value and value-first share the
    # best loss) and at equal time (value-first first, value last), then the costs
    one = text.split("## In one table")[1].split("\n## ")[0]
    cells = {
        c[1]: c[2:-1] for ln in one.splitlines() if ln.startswith("| ") and "| arm |" not in ln
        for c in [[x.strip() for x in ln.split("|")]]
    }  # fmt: skip
    assert sorted(list(cells)[:2]) == ["value", "value-first"] and list(cells)[2] == "none"
    assert cells["none"][0] == "5" and cells["none"][1] == "– (3)"
    assert cells["value"][1].startswith("-0.100 [") and cells["value"][1].endswith(" (1)")
    assert cells["value-first"][1].endswith(" (1)")
    timed_loss = {a: c[-4] for a, c in cells.items()}
    assert (
        timed_loss["value-first"].startswith("-0.180 [") and timed_loss["value-first"][-3:] == "(1)"
    )
    assert timed_loss["none"] == "– (2)" and timed_loss["value"].startswith("+0.100 [")
    assert [cells[a][-3:] for a in ("none", "value", "value-first")] == [
        ["1.00x", "1.00x", "+0"],
        ["2.00x", "1.36x", "+0"],
        ["0.80x", "1.00x", "+32"],
    ]
    cost.write_text(json.dumps(rows[:2]))  # value-first not timed
    report = tmp_path / "report.md"
    report.unlink()
    assert main(["lm", "report", str(tmp_path), "--cost", str(cost)]) == 2
    err = capsys.readouterr().err
    assert "no tiny mode (vocabulary 400) with a step time for every arm" in err
    assert len(err.splitlines()) == 1
    assert not report.exists()
    cost.write_text("{}")
    assert main(["lm", "report", str(tmp_path), "--cost", str(cost)]) == 2
    assert "not a JSON list" in capsys.readouterr().err
