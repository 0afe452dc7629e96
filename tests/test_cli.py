"""The command line: results, files, and one-line errors with exit code 2."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest

from attnstreams.amicl import FIELD_NAMES
from attnstreams.cli import main


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse's own exits (--help, bad arguments)
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_amicl_run_json(capsys):
    code, out, _ = cli(
        capsys, "amicl", "run", "--a", "2", "--trials", "500", "--seed", "1", "--json"
    )
    assert code == 0
    res = json.loads(out)
    assert res["accuracy"] == 1.0 and res["trials"] == 500 and res["seed"] == 1
    assert set(FIELD_NAMES) <= set(res)
    assert res["dim"] == 100 and res["classes"] == 512 and res["length"] == 20
    assert res["method"] == "projections"  # the fast exact sampler for dot + argmax


def test_amicl_run_text(capsys):
    code, out, _ = cli(capsys, "amicl", "run", "--a", "1.0", "--trials", "2000")
    assert code == 0 and out.startswith("accuracy 0.3")


def test_amicl_sweep_writes_csv_and_png(capsys, tmp_path):
    code, out, _ = cli(
        capsys,
        "amicl",
        "sweep",
        "--over",
        "a",
        "--values",
        "0.5,1.5",
        "2",
        "--trials",
        "300",
        "--similarity",
        "dot,pearson",
        "--out",
        str(tmp_path),
    )
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert [(r["series"], float(r["a"])) for r in rows] == [
        (s, a) for s in ("dot", "pearson") for a in (0.5, 1.5, 2.0)
    ]
    assert float(rows[0]["accuracy"]) < 0.05 and float(rows[2]["accuracy"]) > 0.95
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    before = (tmp_path / "sweep.csv").read_bytes()  # a second sweep into it is refused
    code, _, err = cli(
        capsys, "amicl", "sweep", "--over", "a", "--values", "1", "--out", str(tmp_path)
    )
    assert code == 2 and "already holds sweep.csv" in err
    assert (tmp_path / "sweep.csv").read_bytes() == before


def test_amicl_attention_png(capsys, tmp_path):
    code, out, _ = cli(capsys, "amicl", "attention", "--out", str(tmp_path), "--json")
    got = json.loads(out)
    assert code == 0 and got["png"].endswith("attention.png")
    assert got["right"] == (got["picked"] in got["labels"]) and got["labels"]  # the read-out
    assert (tmp_path / "attention.png").stat().st_size > 1000
    code, _, err = cli(capsys, "amicl", "attention", "--out", str(tmp_path))
    assert code == 2 and "already holds attention.png" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["amicl", "run", "--dim", "-3"],
        ["amicl", "run", "--length", "21"],
        ["amicl", "run", "--similarity", "cosine"],
        ["amicl", "run", "--trials", "0"],
        ["amicl", "run", "--a", "abc"],
        ["amicl", "sweep", "--over", "colour", "--values", "1"],
        ["amicl", "sweep", "--over", "dim", "--values", "1.5x"],
        ["amicl", "sweep", "--over", "length", "--values", "20,21"],
        ["amicl", "bogus"],
        ["amicl", "sweep", "--over", "a", "--values", "1", "--similarity", ","],
        ["icl", "grid", "--variants", ","],
        ["icl", "grid", "--stream", "vlaue"],  # --stream as in lm grid
        ["lm", "prepare", "--data-dir", "never", "--device", "cuda"],  # not a data setting
        ["lm", "prepare", "--data-dir", "never", "--lr", "0.1"],
        ["icl", "grid", "--seeds", "100000000000"],  # was a MemoryError listing them
        ["lm", "grid", "--stream", ","],  # was an IndexError
        ["lm", "grid", "--seeds", "100000000000"],
        ["nonsense"],
        [],
    ],
)
def test_bad_arguments_one_line_exit_2(capsys, tmp_path, argv):
    if argv[:2] in (["amicl", "sweep"], ["icl", "grid"], ["lm", "grid"]):
        argv = [*argv, "--out", str(tmp_path / "never")]
    code, out, err = cli(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "error" in err
    assert "Traceback" not in err
    assert not (tmp_path / "never").exists()  # nothing written on bad input


@pytest.mark.parametrize(
    "verb", [[], ["amicl"], ["amicl", "run"], ["amicl", "sweep"], ["reproduce"]]
)
def test_help(capsys, verb):
    code, out, _ = cli(capsys, *verb, "--help")
    assert code == 0 and "usage" in out


def test_unwritable_out_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = cli(capsys, "amicl", "attention", "--out", str(blocker / "sub"))
    assert code == 1 and len(err.strip().splitlines()) == 1


def test_console_script_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "attnstreams.cli", "amicl", "run", "--length", "7"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == "attnstreams: error: length must be even (item/label pairs), got 7"
    )


def test_python_dash_m_runs_the_cli():
    """`python -m attnstreams` is the command: its usage, and its exit code passed through."""
    run = [sys.executable, "-m", "attnstreams"]
    proc = subprocess.run([*run, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: "), proc.stderr
    proc = subprocess.run([*run, "amicl", "run", "--length", "7"], capture_output=True, text=True)
    assert proc.returncode == 2 and "length must be even" in proc.stderr


def test_package_help_points_to_the_entry_points():
    """help(attnstreams) names the main entry points, and each exists where it says."""
    import pydoc

    import attnstreams
    from attnstreams.amicl import AMICLConfig, run
    from attnstreams.models.gpt import GPT, preset
    from attnstreams.models.hf import add_streams, from_pretrained
    from attnstreams.streams import StreamAttention, StreamConfig

    text = pydoc.render_doc(attnstreams, renderer=pydoc.plaintext)
    named = [AMICLConfig, run, GPT, preset, add_streams, from_pretrained, StreamAttention]
    for obj in [*named, StreamConfig]:
        assert f"`{obj.__module__}`" in text and re.search(rf"\b{obj.__name__}\b", text), obj
    assert "attnstreams --help" in text and "python -m attnstreams" in text


def test_import_attnstreams_loads_no_torch():
    """The package's own import is light (its help names submodules, loaded on use)."""
    code = "import sys, attnstreams; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stdout + proc.stderr


def test_start_up_leaves_fsdp_unloaded():
    """FSDP and its state-dict functions cost ~0.6 s to import: only FSDP runs load them."""
    code = (
        "import sys, attnstreams.cli, attnstreams.experiments.lm.train; "
        "print(sorted(m for m in sys.modules if m.startswith(('torch.distributed.fsdp', "
        "'torch.distributed.tensor', 'torch.distributed.checkpoint'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_config_file_sets_defaults_and_flags_win(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(
        json.dumps(
            {
                "steps": 4,
                "eval-every": 2,
                "eval_size": 16,
                "batch": 4,
                "variants": "none",
                "seeds": 1,
            }
        )
    )
    out = tmp_path / "run"
    assert (
        main(["icl", "grid", "--config", str(cfg), "--steps", "6", "--out", str(out), "--json"])
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert res["step"] == 6 and res["runs"] == 1  # --steps beat the file; the rest came from it
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["eval_every"] == 2 and saved["eval_size"] == 16 and saved["batch"] == 4


@pytest.mark.parametrize(
    "content,match",
    [
        ('{"stepz": 3}', "unknown key 'stepz'"),
        ('{"steps": "many"}', "steps must be int"),
        ('{"steps": true}', "steps must be int"),
        ('{"compile": "yes"}', "true or false"),
        ('{"lr": [1]}', "lr must be float"),
        ("[1, 2]", "JSON object"),
        ("{oops", "not valid JSON"),
        ('{"steps": -3}', "steps must be >= 1"),
    ],
)
def test_bad_config_files(tmp_path, capsys, content, match):
    cfg = tmp_path / "c.json"
    cfg.write_text(content)
    assert main(["icl", "train", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and match in err
    assert not (tmp_path / "o" / "checkpoint.safetensors").exists()
    assert main(["lm", "train", "--config", str(tmp_path / "missing.json")]) == 2


def _options(parser):
    """(command, option) for every option of every verb, through the subcommand tree."""
    import argparse

    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [(f"{name} {c}".strip(), o) for c, o in _options(sub)]
        elif action.option_strings and action.default is not argparse.SUPPRESS:
            out.append(("", action))
    return out


def test_every_option_states_its_default():
    from attnstreams.cli import DefaultsFormatter, build_parser

    options = _options(build_parser())
    assert len(options) > 100
    for cmd, action in options:
        text = DefaultsFormatter("x")._get_help_string(action) % {"default": action.default}
        assert "default" in text, (cmd, action.option_strings)


def test_attention_lists_only_options_it_uses(capsys):
    code, out, _ = cli(capsys, "amicl", "attention", "--help")
    assert code == 0 and "--similarity" in out and "--beta" in out
    assert "--trials" not in out and "--method" not in out and "--readout" not in out


def test_a_refused_corpus_leaves_no_folder(capsys, tmp_path, monkeypatch):
    """`lm train --data missing.txt` and `--data tinystories` without `datasets` left
    runs/X/data behind."""
    for data in (str(tmp_path / "missing.txt"), "tinystories"):
        monkeypatch.setitem(sys.modules, "datasets", None)
        out = tmp_path / "run"
        code, _, err = cli(capsys, "lm", "train", "--preset", "tiny", "--data", data,
                           "--out", str(out))  # fmt: skip
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert not out.exists(), data
        code, _, err = cli(capsys, "lm", "grid", "--preset", "tiny", "--data", data,
                           "--out", str(out))  # fmt: skip
        assert code == 2 and not out.exists()
        code, _, err = cli(capsys, "lm", "prepare", "--data", data, "--data-dir", str(out))
        assert code == 2 and not out.exists()


def test_blank_line_separated_stories(tmp_path):
    from attnstreams.data.corpus import iter_texts

    p = tmp_path / "plain.txt"
    p.write_text("One story.\nSecond line.\n\nAnother story.\n  \n\n\nA third.\n")
    assert list(iter_texts(str(p), "all", separator="blank-line")) == [
        "One story.\nSecond line.", "Another story.", "A third."
    ]  # fmt: skip
    assert len(list(iter_texts(str(p), "all"))) == 1  # <|endoftext|>: one document


def test_eval_of_a_file_without_validation_stories_says_how(tmp_path, capsys):
    from attnstreams.data.corpus import in_validation, iter_texts
    from attnstreams.run.config import ConfigError

    p = tmp_path / "mine.txt"
    p.write_text("<|endoftext|>".join(t for i in range(9) if not in_validation(t := f"s {i}.")))
    with pytest.raises(ConfigError, match="--split all evaluates every document"):
        list(iter_texts(str(p), "validation"))


def test_generated_corpus_is_sized_by_the_run(capsys, tmp_path):
    """`lm train --steps 30` tokenised 20M generated tokens before its first step."""
    from attnstreams.cli import GENERATED_FLOOR, _lm_configs, build_parser

    def data_for(*argv):
        return _lm_configs(build_parser().parse_args(["lm", "train", *argv]), "none", 0)[0]

    assert data_for("--preset", "tiny", "--steps", "30").train_tokens == GENERATED_FLOOR
    big = data_for("--preset", "tiny", "--steps", "100000", "--batch", "8")
    assert big.train_tokens == 2 * 100_000 * 8 * 128
    assert data_for("--train-tokens", "5000").train_tokens == 5000
    assert data_for("--data", "x.txt").train_tokens is None  # a file: all of it
    code, _, err = cli(capsys, "lm", "train", "--epochs", "2", "--out", str(tmp_path / "r"))
    assert code == 2 and "finite corpus" in err


def test_short_icl_runs_are_told_what_evaluation_costs():
    from attnstreams.cli import eval_cost_note
    from attnstreams.experiments.icl.train import ICLTrainConfig

    assert eval_cost_note(ICLTrainConfig()) is None  # the default: 40,000 against 64,000
    note = eval_cost_note(ICLTrainConfig(eval_every=50))
    assert "40,000 sequences" in note and "6x the 6,400" in note


def test_progress_is_a_line_every_interval_when_not_a_terminal():
    import io

    from attnstreams.run.logs import LineProgress

    buf = io.StringIO()
    with LineProgress(100, "train", "step", interval=0.0, file=buf) as bar:
        bar.update(10)
        bar.set_postfix(loss="1.23")
        bar.update(90)
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("train: 10/100 step (10%)")
    assert lines[-1].startswith("train: 100/100 step (100%)") and "loss=1.23" in lines[-1]
    quiet = io.StringIO()
    with LineProgress(100, "x", interval=3600, file=quiet) as bar:
        bar.update(5)
    assert len(quiet.getvalue().splitlines()) == 1  # only the closing line


def test_amicl_run_reports_progress_on_stderr(capsys):
    code, out, err = cli(capsys, "amicl", "run", "--trials", "3000")
    assert code == 0 and "amicl: 3,000/3,000 trial (100%)" in err
    code, out, err = cli(capsys, "amicl", "run", "--trials", "3000", "--json")
    assert code == 0 and err == ""


def test_a_csv_stopped_before_its_first_row_leaves_no_file(tmp_path):
    """A header alone would read as a result with no rows (an amicl sweep interrupted)."""
    from attnstreams.run.logs import CSVLog

    with pytest.raises(KeyboardInterrupt), CSVLog(tmp_path / "a.csv", ["x"]):
        raise KeyboardInterrupt
    assert not (tmp_path / "a.csv").exists()
    with pytest.raises(KeyboardInterrupt), CSVLog(tmp_path / "b.csv", ["x"]) as log:
        log.write({"x": 1})
        raise KeyboardInterrupt
    assert (tmp_path / "b.csv").read_text().splitlines() == ["x", "1"]  # kept what it measured
