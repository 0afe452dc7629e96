"""`attnstreams reproduce`: every section runs and the report links its figures."""

import json
import re

from attnstreams.cli import main
from attnstreams.experiments import reproduce


def test_reproduce_quick_writes_report_with_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(reproduce, "QUICK_AMICL_TRIALS", (2_000, 200))
    monkeypatch.setattr(
        reproduce, "QUICK_ICL", {"steps": 6, "batch": 8, "eval_every": 3, "eval_size": 32}
    )
    monkeypatch.setattr(reproduce, "QUICK_LM_TOKENS", 20_000)
    monkeypatch.setitem(reproduce.QUICK_LM, "steps", 4)
    monkeypatch.setitem(reproduce.QUICK_LM, "eval_every", 2)
    assert main(["reproduce", "--quick", "--out", str(tmp_path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # the numbers, too
    assert got["report"] == str(tmp_path / "report.md")
    assert len(got["amicl"]) > 3 and {"accuracy", "trials"} <= set(got["amicl"][0])
    assert set(got["icl"]["results"]["icl@0.95"]["steps"]) >= {"none", "value"}
    assert {c["arm"] for c in got["lm"]} == {"value"} and "paired" in got["lm"][0]
    text = (tmp_path / "report.md").read_text()
    assert "## 1. AMICL" in text and "## 2. In-context classification" in text
    assert "## 3. Language models" in text and "IOI accuracy" in text
    assert "**no**" not in text  # every AMICL row holds
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (tmp_path / link).stat().st_size > 1000, link
    assert (tmp_path / "icl" / "metrics.jsonl").exists()
    assert (tmp_path / "lm" / "value-s0" / "checkpoint.safetensors").exists()
    lm = (tmp_path / "lm" / "report.md").read_text()  # one seed: values, not "± 0.000"
    assert "| held-out loss (nats/token) | value |" in lm and not re.search(r"\d ± 0\.000 ", lm)
    # A used folder is refused before anything is written: nothing is overwritten.
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert main(["reproduce", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "already holds a reproduction" in err and "--resume" not in err
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before
