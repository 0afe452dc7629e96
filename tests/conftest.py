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
  run to run (an mHC compile test once failed on the ninth, under fullgraph).
- torch and hypothesis are imported by the processes that run tests only: pytest-xdist's
  controller, which hands the tests out, would otherwise spend seconds of CPU importing them
  while its workers start.
- The slowest tests (`SLOWEST`) run first: pytest-xdist hands each worker a share of the tests
  in this order and lets an idle worker take over the end of another's share, so a long test
  left to the end would keep one worker busy while the others have nothing to do."""

import os
from pathlib import Path

import pytest

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = "1"

FIXTURE = Path(__file__).parent / "fixtures" / "tinystories-sample.txt"

# Slowest first (4 s or more each in a `pytest --durations` run on 2 cores): a test function
# (every case of it) or one case. Tests not named here keep their place after these.
SLOWEST = [
    "tests/test_parallel.py::test_two_processes_match_one",
    "tests/test_faults.py::test_soak_icl_grid",
    "tests/test_faults.py::test_soak_lm_train",
    "tests/test_parallel.py::test_every_variant_under_ddp_and_fsdp_matches_one_process",
    "tests/test_benchmarks.py::test_multi_gpu_script_runs_its_sequence_on_one_cpu_process",
    "tests/test_benchmarks.py::test_benchmark_runs[lm_share.py]",
    "tests/test_faults.py::test_lm_sigterm_saves_a_checkpoint_and_resume_matches",
    "tests/test_benchmarks.py::test_lm_throughput_times_side_by_side_rows_in_order",
    "tests/test_faults.py::test_signal_saves_a_checkpoint_and_resume_matches",
    "tests/test_parallel.py::test_a_rank_that_dies_stops_the_others_with_one_line",
    "tests/test_benchmarks.py::test_benchmark_runs[compile_time.py]",
    "tests/test_benchmarks.py::test_benchmark_runs[icl_grid.py]",
    "tests/test_reproduce.py::test_reproduce_quick_writes_report_with_figures",
    "tests/test_hyper.py::test_a_compiled_stack_of_mhc_models_computes_the_eager_stack",
    "tests/test_attnres.py::test_compiled_equals_eager",
    "tests/test_examples.py::test_hf_stream_patches_trains_generates_and_reloads",
    "tests/test_lm_stack.py::test_the_vmapped_forward_compiles",
    "tests/test_benchmarks.py::test_benchmark_runs[lm_throughput.py]",
    "tests/test_hyper.py::test_compiled_equals_eager",
    "tests/test_lm.py::test_lm_cli_train_eval_sample_grid_report",
    "tests/test_benchmarks.py::test_benchmark_runs[kernel_count.py]",
    "tests/test_icl_faithful.py::test_generator_statistics_equal_the_authors",
    "tests/test_examples.py::test_stream_gpt_learns_to_copy",
    "tests/test_mudd.py::test_compiled_equals_eager",
    "tests/test_cli.py::test_python_dash_m_runs_the_cli",
    "tests/test_muddvr.py::test_compiled_equals_eager",
    "tests/test_amicl.py::test_many_trials_stream_in_bounded_memory",
    "tests/test_lm_stack.py::test_lm_grid_stacks_seeds_and_continues",
]


def _runs_tests(config: pytest.Config) -> bool:
    """False in pytest-xdist's controller, which starts workers and runs no test itself."""
    return hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None)


def pytest_configure(config: pytest.Config) -> None:
    if not _runs_tests(config):
        return
    import torch._dynamo
    from hypothesis import settings

    torch._dynamo.config.recompile_limit = 64
    settings.register_profile("ci", derandomize=True, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST)}
    last = len(SLOWEST)

    def place(item: pytest.Item) -> int:
        return rank.get(item.nodeid, rank.get(item.nodeid.split("[")[0], last))

    items.sort(key=place)  # stable: the rest keep their collection order


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """Token files of the fixture stories (512-token BPE) for LM trainer tests; a module that
    needs others defines its own `data_dir`."""
    from attnstreams.experiments.lm.data import DataConfig, prepare_data

    cfg = DataConfig(
        data=str(FIXTURE), vocab_size=512, tokenizer_docs=100, train_tokens=None, val_tokens=1000
    )
    return prepare_data(cfg, tmp_path_factory.mktemp("data"), progress=False)
