"""The output layer and its cross-entropy as one autograd function, with the loss and its
gradient made in one pass over the logits on CUDA (a Triton kernel).

    loss, logits = linear_cross_entropy(x, weight, targets, vocab_size)

computes `cross_entropy(x @ weight.T, targets, vocab_size)` (gpt.py): the mean token
cross-entropy in float32 over the first vocab_size columns, targets of -100 ignored. What
differs is how many times the (tokens, vocabulary) logits go through device memory. Autograd
through the compiled logsumexp form reads them in the forward reduction and again in the
backward pass, where it writes their gradient; here the forward pass writes the gradient
itself, (softmax - onehot) / kept tokens in the logits' dtype, while it has the row at hand,
and the backward pass only runs the two matmuls on it, scaled by the incoming gradient
(exact for the usual 1.0). The logits come back detached, as GPT.forward returns them.

Off CUDA (or without Triton) the same function runs in plain torch (`_loss_and_grad_torch`),
which the CPU tests check against F.cross_entropy; the kernel is checked against it on the GPU
(`benchmarks/profile_steps.py loss`, tests/test_fused_loss.py where CUDA is present).
"""

from __future__ import annotations

import torch

try:  # Triton ships with CUDA builds of torch
    import triton
    import triton.language as tl
    from torch.library import triton_op, wrap_triton
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None

IGNORE = -100
# the kernel's launch settings (`benchmarks/profile_steps.py loss` times these and others)
# PROGRAMS_PER_SM: 0 launches a program a row; n, n programs a multiprocessor looping over rows
CONFIG = {"BLOCK": 4096, "PROGRAMS_PER_SM": 0, "num_warps": 16}


def _loss_and_grad_torch(
    logits: torch.Tensor, targets: torch.Tensor, vocab_size: int, n_keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row losses (float32) and d(mean loss)/d(logits) in the logits' dtype, plain torch."""
    x = logits.float()
    cols = torch.arange(x.size(-1), device=x.device)
    x = x.masked_fill(cols >= vocab_size, float("-inf"))
    lse = torch.logsumexp(x, -1, keepdim=True)
    keep = targets != IGNORE
    t = targets.clamp_min(0).unsqueeze(1)
    loss = torch.where(keep, lse.squeeze(1) - x.gather(1, t).squeeze(1), 0.0)
    p = torch.exp(x - lse)
    p = p - (cols == t).float()
    p = torch.where(keep.unsqueeze(1), p, 0.0) / n_keep
    return loss, p.to(logits.dtype)


if triton is not None:

    @triton.jit
    def _ce_kernel(
        logits, grad, targets, loss, n_keep, stride_l, stride_g, M, V, NCOL, BLOCK: tl.constexpr
    ):
        """Rows pid, pid + programs, ...: online logsumexp over the first V columns (per-lane
        running max and sum, base 2), then the row's gradient written (zero past V). With
        fewer programs than rows, the rows in flight fit in L2 and the second read of a row
        comes from there."""
        cols = tl.arange(0, BLOCK)
        inv_n = 1.0 / tl.load(n_keep).to(tl.float32)
        pid = tl.program_id(0).to(tl.int64)
        programs = tl.num_programs(0)
        for i in tl.range(0, tl.cdiv(M - tl.program_id(0), programs)):
            row = pid + i * programs
            src = logits + row * stride_l
            m = tl.full([BLOCK], -1.0e30, tl.float32)
            s = tl.zeros([BLOCK], tl.float32)
            for start in range(0, V, BLOCK):
                c = start + cols
                x = tl.load(src + c, mask=c < V, other=-1.0e30).to(tl.float32) * 1.4426950408889634
                m_new = tl.maximum(m, x)
                s = s * tl.exp2(m - m_new) + tl.exp2(x - m_new)
                m = m_new
            mx = tl.max(m, 0)
            lse2 = mx + tl.log2(tl.sum(s * tl.exp2(m - mx), 0))  # log2 of the sum of exponentials
            t = tl.load(targets + row)
            keep = t != -100
            tc = tl.where(keep, t, 0)
            xt = tl.load(src + tc).to(tl.float32) * 1.4426950408889634
            tl.store(loss + row, tl.where(keep, (lse2 - xt) / 1.4426950408889634, 0.0))
            scale = tl.where(keep, inv_n, 0.0)
            dst = grad + row * stride_g
            for start in range(0, NCOL, BLOCK):
                c = start + cols
                x = tl.load(src + c, mask=c < V, other=-1.0e30).to(tl.float32) * 1.4426950408889634
                p = tl.exp2(x - lse2) - tl.where(c == tc, 1.0, 0.0)
                tl.store(dst + c, (p * scale).to(grad.dtype.element_ty), mask=c < NCOL)

    @triton_op("attnstreams::loss_and_grad", mutates_args={})
    def _loss_and_grad_cuda(
        logits: torch.Tensor, targets: torch.Tensor, vocab_size: int, n_keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        M, N = logits.shape
        cfg = dict(CONFIG)
        per_sm = cfg.pop("PROGRAMS_PER_SM")
        sms = torch.cuda.get_device_properties(logits.device).multi_processor_count
        programs = M if not per_sm else max(1, min(M, per_sm * sms))
        loss = torch.empty(M, device=logits.device, dtype=torch.float32)
        grad = torch.empty_like(logits)
        wrap_triton(_ce_kernel)[(programs,)](
            logits, grad, targets, loss, n_keep, logits.stride(0), grad.stride(0), M,
            vocab_size, N, **cfg,
        )  # fmt: skip
        return loss, grad


def loss_and_grad(
    logits: torch.Tensor, targets: torch.Tensor, vocab_size: int, n_keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, N) logits, (M,) targets -> per-row losses and the mean loss's gradient (N >= V)."""
    if triton is not None and logits.is_cuda and logits.stride(-1) == 1:
        return _loss_and_grad_cuda(logits, targets.contiguous(), vocab_size, n_keep)
    return _loss_and_grad_torch(logits, targets, vocab_size, n_keep)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, vocab_size):
        logits = x @ weight.mT
        n_keep = (targets != IGNORE).sum().clamp_min(1)
        rows, grad = loss_and_grad(logits, targets, vocab_size, n_keep)
        ctx.save_for_backward(x, weight, grad)
        ctx.mark_non_differentiable(logits)
        return rows.sum() / n_keep, logits

    @staticmethod
    def backward(ctx, g_loss, _g_logits):
        x, weight, grad = ctx.saved_tensors
        g = g_loss.to(grad.dtype)
        gx = (grad @ weight) * g if ctx.needs_input_grad[0] else None
        gw = (grad.mT @ x) * g if ctx.needs_input_grad[1] else None
        return gx, gw, None, None


def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of the logits x @ weight.T (columns from vocab_size on excluded) and
    those logits, detached: (..., d) inputs, (N, d) weight, (...) targets. Under autocast the
    matmuls run in its dtype, as nn.Linear's would."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        dt = torch.get_autocast_dtype(dev)
        x, weight = x.to(dt), weight.to(dt)
    shape = x.shape[:-1]
    vocab_size = weight.size(0) if vocab_size is None else vocab_size
    with torch.autocast(dev, enabled=False):
        loss, logits = _LinearCrossEntropy.apply(
            x.flatten(0, -2), weight, targets.flatten(), vocab_size
        )
    return loss, logits.unflatten(0, shape)
