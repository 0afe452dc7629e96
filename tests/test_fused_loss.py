"""The fused output layer + cross-entropy (models/fused_loss.py) computes nn.Linear followed by
the mean cross-entropy: loss and gradients, padding columns and ignored targets included."""

import pytest
import torch
import torch.nn.functional as F

from attnstreams.models import fused_loss
from attnstreams.models.fused_loss import linear_cross_entropy
from attnstreams.models.gpt import GPT, preset

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def reference(x, w, targets, vocab):
    logits = x @ w.mT
    return F.cross_entropy(
        logits[..., :vocab].flatten(0, -2).float(), targets.flatten(), ignore_index=-100
    )


def case(device="cpu", dtype=torch.float64, n=(3, 5), d=16, cols=40, vocab=33, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*n, d, generator=g, dtype=dtype).to(device).requires_grad_()
    w = torch.randn(cols, d, generator=g, dtype=dtype).to(device)
    w[vocab:] += 3.0  # padding rows whose logits would dominate if they leaked in
    w.requires_grad_()
    t = torch.randint(vocab, n, generator=g).to(device)
    t.view(-1)[:4] = -100  # ignored positions
    return x, w, t


def test_matches_linear_then_cross_entropy():
    x, w, t = case()
    loss, logits = linear_cross_entropy(x, w, t, 33)
    assert not logits.requires_grad and logits.shape == (3, 5, 40)
    gx, gw = torch.autograd.grad(3.0 * loss, (x, w))  # an incoming gradient other than 1
    ref = reference(x, w, t, 33)
    rx, rw = torch.autograd.grad(3.0 * ref, (x, w))
    torch.testing.assert_close(loss, ref.to(loss.dtype))
    torch.testing.assert_close(gx, rx, rtol=1e-5, atol=1e-6)  # float32 softmax in both
    torch.testing.assert_close(gw, rw, rtol=1e-5, atol=1e-6)
    assert gw[33:].abs().max() == 0  # padding rows: no gradient
    torch.testing.assert_close(logits, (x @ w.mT).detach())


def test_all_targets_ignored_gives_zero():
    x, w, t = case()
    t.fill_(-100)
    loss, _ = linear_cross_entropy(x, w, t, 33)
    gx, gw = torch.autograd.grad(loss, (x, w))
    assert loss.item() == 0 and gx.abs().max() == 0 and gw.abs().max() == 0


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_torch_form(dtype):
    torch.manual_seed(0)
    logits = (3 * torch.randn(64, 5000, device="cuda")).to(dtype)
    t = torch.randint(4990, (64,), device="cuda")
    t[:5] = -100
    n = (t != -100).sum()
    rows, grad = fused_loss.loss_and_grad(logits, t, 4990, n)
    rrows, rgrad = fused_loss._loss_and_grad_torch(logits, t, 4990, n)
    torch.testing.assert_close(rows, rrows, rtol=1e-5, atol=1e-5)
    tol = 1e-6 if dtype == torch.float32 else 2e-3 / 59  # one bf16 rounding of the gradient
    torch.testing.assert_close(grad.float(), rgrad.float(), rtol=1e-2, atol=tol)


@cuda
def test_gpt_fused_and_unfused_agree():
    torch.manual_seed(0)
    model = GPT(preset("tiny", stream="value")).cuda()
    x = torch.randint(512, (4, 64), device="cuda")
    out = []
    for fused in (True, False):
        model.fused_loss = fused
        model.zero_grad()
        with torch.autocast("cuda", torch.bfloat16):
            _, loss = model(x, x)
        loss.backward()
        out.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(out[0][1], out[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-4)
