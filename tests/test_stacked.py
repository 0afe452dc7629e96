"""StackedToyICL (the grid's batched engine) computes exactly what each ToyICL computes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnstreams.experiments.icl.stacked import StackedToyICL
from attnstreams.models.toy import ToyICL, ToyICLConfig

VARIANTS = [
    "none",
    "value",
    "key",
    "query",
    "value-first",
    "value-first-sum",
    "value-learned",
    "query-first-learned",
    "key-learned-per-head",
    "value-gated",
    "value-first-gated",
    "query-gated",
    "value-shared",
    "key-shared",
    "key-smear",
    "key-smear-learned",
    "key-smear-sum",
]


def make_runs(variants, seeds, layers, scaled=False, **kw):
    runs = []
    for v in variants:
        row = []
        for s in seeds:
            torch.manual_seed(s)
            cfg = ToyICLConfig(12, 5, layers, mlp_width=9, scaled=scaled, stream=v, **kw)
            m = ToyICL(cfg).double()  # float64: differences are the method's, not rounding
            with torch.no_grad():  # learned mixes and gates away from their initial values
                for n, p in m.named_parameters():
                    if n.endswith(("stream_mix", "stream_smear")):
                        p.copy_(torch.rand_like(p) + 0.5)
                    if "stream_gate" in n:
                        p.copy_(torch.randn_like(p))
            row.append(m)
        runs.append(row)
    return runs


@pytest.mark.parametrize(
    "layers,scaled,kw",
    [
        (2, False, {}),  # the authors' layout: scalar MLP biases, no read-out bias
        (3, True, {"mlp_bias": "vector", "readout_bias": True}),
        (4, False, {"mlp_bias": "none", "init": "independent"}),
    ],
)
def test_forward_and_gradients_equal_each_toyicl(layers, scaled, kw):
    seeds = [0, 1]
    runs = make_runs(VARIANTS, seeds, layers, scaled, **kw)
    stacked = StackedToyICL(runs)
    x = torch.randn(len(seeds), 6, 7, 12, dtype=torch.float64)
    y = torch.randint(5, (len(seeds), 6))
    logits = stacked.forward(x)
    assert logits.shape == (len(VARIANTS), len(seeds), 6, 5)
    stacked.losses(x, y).sum().backward()
    for v, row in enumerate(runs):
        for s, model in enumerate(row):
            ref = model(x[s])
            torch.testing.assert_close(logits[v, s], ref, rtol=1e-10, atol=1e-10)
            F.cross_entropy(ref, y[s]).backward()
            grads = {n: p.grad for n, p in model.named_parameters()}
            mine = stacked.run_state(v, s, {n: p.grad for n, p in stacked.params.items()})
            assert mine.keys() == grads.keys()
            for n in grads:
                torch.testing.assert_close(mine[n], grads[n], rtol=1e-9, atol=1e-10)


def test_run_state_round_trip_and_learned_only_where_learned():
    runs = make_runs(
        ["none", "value-learned", "key-first-learned-per-head", "key-smear"], [0, 1, 2], 3
    )
    stacked = StackedToyICL(runs)
    for v, row in enumerate(runs):
        for s, model in enumerate(row):
            mine = stacked.run_state(v, s)
            ref = model.state_dict()
            assert mine.keys() == ref.keys()
            for n in ref:
                assert torch.equal(mine[n], ref[n]), n
    x = torch.randn(3, 4, 5, 12, dtype=torch.float64)
    stacked.losses(x, torch.randint(5, (3, 4))).sum().backward()
    grad = stacked.params["mix"].grad
    assert torch.count_nonzero(grad[0]) == 0  # 'none' has no learned coefficient
    assert torch.count_nonzero(grad[1, :, 1:, 2]) > 0  # value-learned: layers 2-3, value slot
    assert torch.count_nonzero(grad[1, :, :, :2]) == 0
    assert torch.count_nonzero(grad[3]) == 0  # key-smear: its coefficient is apart
    smear = stacked.params["smear"].grad
    assert torch.count_nonzero(smear[:3]) == 0 and torch.all(smear[3] != 0)  # every layer
    stacked.load_run(0, slice(None), {n: t + 1 for n, t in stacked.run_state(0).items()})
    assert torch.equal(stacked.run_state(0, 1)["mlp.0.bias"], runs[0][1].mlp[0].bias + 1)


def test_runs_must_share_the_architecture():
    a = make_runs(["none", "value"], [0], 2)
    b = make_runs(["none"], [0], 3)  # another depth
    with pytest.raises(ValueError, match="share one ToyICLConfig"):
        StackedToyICL([a[0], b[0]])
    with pytest.raises(ValueError, match="share one ToyICLConfig"):
        StackedToyICL([[a[0][0], a[1][0]]])  # two streams in one row
