"""Faults: SIGKILL at random moments, SIGTERM, non-finite losses, a full disk, bad checkpoints.
Nothing is lost and a resumed run equals an uninterrupted one, bitwise on CPU."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attnstreams.cli import main
from attnstreams.experiments.lm.data import DataConfig, prepare_data
from attnstreams.experiments.lm.train import (
    LMTrainConfig,
    LMTrainer,
)
from attnstreams.experiments.lm.train import train as lm_train
from attnstreams.experiments.lm.weights import load_model_state
from attnstreams.models.gpt import GPT, preset
from attnstreams.run import checkpoint
from attnstreams.run.config import ConfigError
from attnstreams.run.logs import NonFiniteLoss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from soak import (  # noqa: E402  (benchmarks/soak.py: the kill-and-resume soak, 6 cycles here)
    CLI,
    ICL_ARGS,
    ICL_SHORT,
    LM_DATA,
    MODES,
    assert_same_run,
    kill_until_done,
    lm_args,
    rows,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tinystories-sample.txt"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    cfg = DataConfig(data=str(FIXTURE), **LM_DATA)
    return prepare_data(cfg, tmp_path_factory.mktemp("data"), progress=False)


def in_process(argv: list[str]) -> None:
    """Run the command in this process, which saves starting one, where nothing else is tested
    of it than its result: a reference run, a last resume. It must exit 0. (The run folder's
    lock stays with this process: only for a folder no other process writes to after it.)"""
    assert main(argv) == 0


def soak(argv: list[str], folder: Path, kills: int, seed: int) -> list[dict]:
    """The soak's cycles (benchmarks/soak.py) in small: a reference run, then one run SIGKILLed
    `kills` times (at start-up, mid-step, near an evaluation, mid-checkpoint-write), each
    checkpoint left checked to load, each resume to exit 0, and the end equal to the reference
    bit for bit."""
    in_process([*argv, "--out", str(folder / "ref")])
    kills_made = kill_until_done(argv, folder / "killed", kills=kills, seed=seed)
    assert [k["hit"] for k in kills_made] == [True] * kills, kills_made  # each hit a live run
    assert_same_run(folder / "ref", folder / "killed")
    return kills_made


def test_soak_icl_grid(tmp_path):
    argv = [*ICL_ARGS[:7], "600", *ICL_ARGS[8:]]
    kills = soak(argv, tmp_path, kills=3, seed=24)
    # the seed's draws: 3 kinds of moment here, the fourth (near an evaluation) in the lm soak
    assert {k["mode"] for k in kills} == set(MODES) - {"eval"}


def test_soak_lm_train(tmp_path, data_dir):
    kills = soak(lm_args(data_dir, steps=300), tmp_path, kills=3, seed=6)
    assert {k["mode"] for k in kills} == set(MODES) - {"step"}  # mid-step: the icl soak


@pytest.fixture(scope="module")
def icl_short_ref(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    in_process([*ICL_SHORT, "--out", str(out)])
    return rows(out / "metrics.jsonl")


@pytest.mark.parametrize("sig", [signal.SIGINT])  # SIGTERM: the lm test below
def test_signal_saves_a_checkpoint_and_resume_matches(tmp_path, sig, icl_short_ref):
    interrupt_then_resume(ICL_SHORT, tmp_path / "run", sig, steps=int(ICL_SHORT[7]))
    assert rows(tmp_path / "run" / "metrics.jsonl") == icl_short_ref


def test_lm_sigterm_saves_a_checkpoint_and_resume_matches(tmp_path, data_dir):
    argv = lm_args(data_dir)
    argv[argv.index("--steps") + 1] = "200"
    in_process([*argv, "--out", str(tmp_path / "ref")])
    interrupt_then_resume(argv, tmp_path / "run", signal.SIGTERM, steps=200)
    assert_same_run(tmp_path / "ref", tmp_path / "run")


def interrupt_then_resume(argv: list[str], out: Path, sig: int, steps: int) -> None:
    """Signal a run once it has a checkpoint: it saves, exits 128 + sig; then resume it."""
    proc = subprocess.Popen(
        [*CLI, *argv, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300  # a safety net against a hang, not a time budget
    while not (out / "checkpoint.safetensors").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, err
    assert "continue with --resume" in err.strip().splitlines()[-1]
    _, meta = checkpoint.load(out / "checkpoint.safetensors")
    assert f"interrupted at step {meta['step']}:" in err  # the step it stopped at is saved
    assert 0 < meta["step"] < steps
    in_process([*argv, "--out", str(out), "--resume"])


TINY = LMTrainConfig(
    preset="tiny",
    stream="value",
    steps=9,
    batch=4,
    block_size=32,
    warmup=2,
    eval_every=3,
    eval_batches=1,
    ioi_prompts=8,
)


def poison_after(trainer: LMTrainer, step: int) -> None:
    """From `step` on, the loss is NaN (as after a blow-up)."""
    forward = trainer.forward

    def poisoned(x, y):
        logits, loss = forward(x, y)
        return logits, loss * float("nan") if trainer.step >= step else loss

    trainer.forward = poisoned


def test_nonfinite_loss_stops_and_keeps_last_good(tmp_path, data_dir):
    trainer = LMTrainer(TINY, data_dir)
    poison_after(trainer, 4)
    with pytest.raises(NonFiniteLoss, match="between steps 3 and 6"):
        lm_train(trainer, tmp_path, progress=False)
    tensors, meta = checkpoint.load(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 3
    assert all(
        torch.isfinite(v.float()).all() for k, v in tensors.items() if k.startswith("model/")
    )


def test_nonfinite_skip_option(tmp_path, data_dir):
    trainer = LMTrainer(LMTrainConfig(**{**TINY.__dict__, "nonfinite": "skip"}), data_dir)
    poison_after(trainer, 4)
    lm_train(trainer, tmp_path, progress=False)
    last = rows(tmp_path / "metrics.jsonl")[-1]
    assert last["step"] == 9 and last["skipped_steps"] == 5
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_full_disk_keeps_previous_checkpoint(tmp_path, data_dir, monkeypatch):
    trainer = LMTrainer(TINY, data_dir)
    real = checkpoint.save_file
    calls = {"n": 0}

    def flaky(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(filename).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", flaky)
    with pytest.raises(OSError):
        lm_train(trainer, tmp_path, progress=False)
    _, meta = checkpoint.load(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 3  # the previous good checkpoint, untouched
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []


def test_resume_clears_what_a_killed_checkpoint_write_left(tmp_path, data_dir):
    lm_train(LMTrainer(TINY, data_dir), tmp_path, progress=False, stop_after=3)
    stale = tmp_path / ".checkpoint.safetensors.tmp-12345"  # as a SIGKILL mid-save leaves it
    stale.mkdir()
    (stale / ".tmpAbC123").write_bytes(b"half a file")  # safetensors' own temporary
    (tmp_path / ".checkpoint.safetensors.tmp-678").write_bytes(b"older layout")
    lm_train(LMTrainer(TINY, data_dir), tmp_path, resume=True, progress=False)
    assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []
    assert checkpoint.load(tmp_path / "checkpoint.safetensors")[1]["step"] == TINY.steps


def test_unwritable_output_fails_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([*ICL_ARGS, "--out", str(blocker / "run")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    argv = lm_args(tmp_path / "data")  # lm train: refused before the corpus is tokenised
    assert main([*argv, "--out", str(blocker / "run")]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()


def test_pickle_and_truncated_checkpoints_are_refused(tmp_path, data_dir):
    bad = tmp_path / "model.pt"
    torch.save({"model": torch.zeros(3)}, bad)  # a pickle file
    with pytest.raises(ConfigError, match="not a readable attnstreams checkpoint"):
        checkpoint.load(bad)
    trainer = LMTrainer(TINY, data_dir)
    good = trainer.save(tmp_path / "c.safetensors")
    data = good.read_bytes()
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match="not a readable"):
        checkpoint.load(tmp_path / "t.safetensors")


def _corrupt_middle(path: Path, n: int = 64) -> bytes:
    """Overwrite n bytes in the middle of a safetensors file's tensor data (after its header)."""
    raw = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    mid = header + (len(raw) - header) // 2
    raw[mid : mid + n] = bytes(b ^ 0xFF for b in raw[mid : mid + n])
    path.write_bytes(bytes(raw))
    return bytes(raw)


def test_corrupted_tensor_data_is_refused_on_load_and_resume(tmp_path, data_dir, capsys):
    """It went unnoticed before: the resume was accepted, the loss went non-finite and the
    corrupted file was kept as the last good checkpoint."""
    lm_train(LMTrainer(TINY, data_dir), tmp_path, progress=False, stop_after=3)
    ckpt = tmp_path / "checkpoint.safetensors"
    checkpoint.load(ckpt)  # intact: loads
    corrupted = _corrupt_middle(ckpt)
    with pytest.raises(ConfigError, match="corrupted"):
        checkpoint.load(ckpt)
    with pytest.raises(ConfigError, match="corrupted"):
        lm_train(LMTrainer(TINY, data_dir), tmp_path, resume=True, progress=False)
    assert ckpt.read_bytes() == corrupted  # left as found, for a look
    assert main(["lm", "eval", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "corrupted" in err[0]


def test_an_old_checkpoint_without_a_digest_still_loads(tmp_path):
    tensors = {"w": torch.arange(6.0)}
    checkpoint.save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"meta": "{}"})
    got, meta = checkpoint.load(tmp_path / "old.safetensors")
    assert torch.equal(got["w"], tensors["w"]) and meta == {}


def test_a_write_that_does_not_read_back_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, {"w": torch.zeros(4)}, {"step": 1})
    real = checkpoint.load_file

    def bitflip(filename, *a, **kw):  # the disk returns other bytes than were written
        t = real(filename, *a, **kw)
        return {k: v + 1 for k, v in t.items()}

    monkeypatch.setattr(checkpoint, "load_file", bitflip)
    with pytest.raises(OSError, match="did not read back intact"):
        checkpoint.save(path, {"w": torch.ones(4)}, {"step": 2})
    monkeypatch.undo()
    tensors, meta = checkpoint.load(path)
    assert meta["step"] == 1 and torch.equal(tensors["w"], torch.zeros(4))
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]


def test_wrong_architecture_and_tokenizer_are_refused(tmp_path, data_dir):
    trainer = LMTrainer(TINY, data_dir)
    path = trainer.save(tmp_path / "c.safetensors")
    tensors, meta = checkpoint.load(path)
    other = GPT(preset("tiny", vocab_size=trainer.tokenizer.vocab_size, n_layer=2))
    with pytest.raises(ConfigError, match="does not fit this model"):
        load_model_state(other, tensors)
    wide = GPT(preset("tiny", vocab_size=trainer.tokenizer.vocab_size, block_size=64))
    with pytest.raises(ConfigError, match="shape"):
        load_model_state(wide, tensors)
    meta["vocab_size"] += 1
    checkpoint.save(tmp_path / "v.safetensors", tensors, meta)
    with pytest.raises(ConfigError, match="different tokenizer"):
        trainer.load(tmp_path / "v.safetensors")


def test_icl_nonfinite_loss_stops_and_keeps_last_good(tmp_path):
    from attnstreams.experiments.icl.train import ICLGrid, ICLTrainConfig
    from attnstreams.experiments.icl.train import train as icl_train

    cfg = ICLTrainConfig(steps=12, batch=8, eval_every=4, eval_size=16, data_chunk=4)
    grid = ICLGrid(["none", "value"], [0], cfg)
    losses = grid._losses

    def poisoned(x, y):
        out = losses(x, y)
        return out * float("nan") if grid.step >= 5 else out

    grid._losses = poisoned
    with pytest.raises(NonFiniteLoss, match="between steps 4 and 8"):
        icl_train(grid, tmp_path, progress=False)
    _, meta = checkpoint.load(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 4
    assert max(r["step"] for r in rows(tmp_path / "metrics.jsonl")) == 4  # no NaN rows written


def test_background_saver_writes_a_snapshot_and_reports_errors(tmp_path, monkeypatch):
    """The tensors are copied when save() is called: changing them while the file is being
    written does not reach it. A failed write raises at the next save(); an exception already
    leaving the `with` block is not replaced by a write error."""
    import threading

    mutated, real_save = threading.Event(), checkpoint.save

    def save_after_mutation(*args):
        assert mutated.wait(10)  # the caller changes the tensor before this write starts
        return real_save(*args)

    monkeypatch.setattr(checkpoint, "save", save_after_mutation)
    t = torch.arange(6.0)
    with checkpoint.BackgroundSaver() as saver:
        saver.save(tmp_path / "a.safetensors", {"t": t}, {"step": 1})
        t.add_(100)
        mutated.set()
    got, meta = checkpoint.load(tmp_path / "a.safetensors")
    assert torch.equal(got["t"], torch.arange(6.0)) and meta == {"step": 1}

    (tmp_path / "file").write_text("")
    bad = tmp_path / "file" / "b.safetensors"  # its parent is not a folder
    saver = checkpoint.BackgroundSaver()
    saver.save(bad, {"t": t}, {})
    with pytest.raises(OSError):
        saver.save(tmp_path / "c.safetensors", {"t": t}, {})
    saver.__exit__(None, None, None)
    with pytest.raises(KeyboardInterrupt):
        with checkpoint.BackgroundSaver() as saver:
            saver.save(bad, {"t": t}, {})
            raise KeyboardInterrupt


# -- two writers ---------------------------------------------------------------------------------
HOLDER = """
import sys, time
from attnstreams.run.logs import hold_lock
hold_lock(sys.argv[1])
print("held", flush=True)
time.sleep(120)
"""


def _holder(folder: Path) -> subprocess.Popen:
    """Another process holding `folder`'s lock, as a running `lm train` or grid does."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_free(tmp_path):
    from attnstreams.run.logs import LOCK, hold_lock

    folder = tmp_path / "run"
    holder = _holder(folder)
    try:
        with pytest.raises(ConfigError, match=f"in use by process {holder.pid}"):
            hold_lock(folder)
    finally:
        holder.kill()  # SIGKILL: no clean-up; the kernel drops the lock
        holder.wait()
    assert (folder / LOCK).read_text().strip() == str(holder.pid)  # the stale file stays
    hold_lock(folder)  # ... and is taken over
    assert (folder / LOCK).read_text().strip() == str(os.getpid())


@pytest.mark.parametrize("verb", ["lm train", "lm grid", "icl grid"])
def test_every_writer_refuses_a_folder_in_use_at_once(tmp_path, data_dir, verb, capsys):
    folder = tmp_path / "run"
    holder = _holder(folder)
    try:
        if verb == "icl grid":
            argv = [*ICL_SHORT, "--out", str(folder), "--resume"]
        else:
            argv = [*lm_args(data_dir), "--out", str(folder)]
            if verb == "lm grid":
                argv = ["lm", "grid", *argv[2:], "--seeds", "1"]
                argv[argv.index("--stream") + 1] = "none,value"
        t0 = time.perf_counter()
        code = main(argv)  # in this process: the holder is another one
        assert time.perf_counter() - t0 < 30  # at once: nothing trained or tokenised
        err = capsys.readouterr().err
        assert code == 2, err[-1500:]
        err = err.strip().splitlines()
        assert len(err) == 1 and f"in use by process {holder.pid}" in err[0], err
    finally:
        holder.kill()
        holder.wait()
    assert not (folder / "checkpoint.safetensors").exists()
