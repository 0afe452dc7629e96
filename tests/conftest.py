"""Test-wide settings.

- One CPU thread per process, for this process and every subprocess a test starts (set before
  torch is imported): the suite's tiny models gain nothing from more, and several processes
  each taking one thread per core oversubscribe a small or busy machine many times over.
- torch.compile's Inductor compiles its C++ kernels in this process, not in a pool of
  workers: on two cores a pool's start-up costs more than it saves (cold cache, the three
  compile tests of test_variants.py: 185 s against 323 s wall, 162 against 191 s of CPU).
- Under CI (CI set in the environment) hypothesis draws a fixed sequence of examples, so a run
  is reproducible; locally it explores new ones each time.
- Dynamo may recompile one code object 64 times, not 8: a worker process compiles many models
  of other shapes through the same `GPT.forward`, and which tests share a worker changes from
  run to run (an mHC compile test once failed on the ninth, under fullgraph)."""

import os
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = "1"

import pytest  # noqa: E402
import torch._dynamo  # noqa: E402
from hypothesis import settings  # noqa: E402

torch._dynamo.config.recompile_limit = 64

FIXTURE = Path(__file__).parent / "fixtures" / "tinystories-sample.txt"

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Token files of the fixture stories (512-token BPE) for LM trainer tests; a module that
    needs others defines its own `data_dir`."""
    from attnstreams.experiments.lm.data import DataConfig, prepare_data

    cfg = DataConfig(
        data=str(FIXTURE), vocab_size=512, tokenizer_docs=100, train_tokens=None, val_tokens=1000
    )
    return prepare_data(cfg, tmp_path_factory.mktemp("data"), progress=False)
