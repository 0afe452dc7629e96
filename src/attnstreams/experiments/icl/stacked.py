"""Many ToyICL runs as one batched computation: the experiment-1 grid's engine.

`ToyICL` (models/toy.py, with the stream in streams.py) is the reference. This module states
the same forward pass for V variants x S seeds at once with parameters stacked (V, S, ...), so a
whole grid is one set of kernels instead of one per run or per variant. To put different variants in
the same kernels, each run's stream is written as mixing coefficients: layer n uses

    P_n = a * own_n + b * handed_on            for each projection P in (query, key, value)

with (a, b) = (1, 1) for the streamed projection in `sum` mode, (0.5, 0.5) in `half` mode,
(0, 1) in `shared` mode, (1, 0) for the others (exact in floating point: 1 * x + 0 * y == x),
and learned (a, b) where the variant learns its mix; a gated variant adds g (src - own) with its
per-token gate g (0 for the others), and a smeared key adds c * (its key one position back) to
its key in every layer (c: 1 for `key-smear-sum`, learned from 0, or 0 for the others). Two
shortcuts keep the result and drop work: the input is shared by a seed's variants (broadcast
into one batched matmul, never copied per variant by hand), and the last attention layer
computes its query for the last token only,
the only position the read-out sees. Widths are padded to a multiple of 8 (see `_slots`).
tests/test_stacked.py checks every variant against ToyICL.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from attnstreams.models.toy import ToyICL
from attnstreams.run.config import ConfigError
from attnstreams.streams import StreamConfig

PROJECTIONS = ("query", "key", "value")


def _project(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(V or 1, S, B, T, d) @ (V, S, e, d)^T -> (V, S, B, T, e), one batched matmul over runs
    (a seed's input, shared by its variants in layer 1, is broadcast)."""
    return (h.flatten(2, 3) @ w.mT).unflatten(2, h.shape[2:4])


def _mix_init(stream: StreamConfig, n_layers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_layers, 3, 2) coefficients (a, b) and which of them are learned."""
    coef = torch.zeros(n_layers, 3, 2)
    coef[:, :, 0] = 1.0
    learned = torch.zeros(n_layers, 3, 2, dtype=torch.bool)
    if stream.active and not stream.smear:
        j = PROJECTIONS.index(stream.kind)
        if stream.mix == "half":
            coef[1:, j] = 0.5
        elif stream.mix == "shared":
            coef[1:, j, 0], coef[1:, j, 1] = 0.0, 1.0
        elif stream.mix != "gated":  # gated: (1, 0) plus the gate's g (src - own)
            coef[1:, j, 1] = 1.0
        learned[1:, j, :] = stream.learned
    return coef, learned


# The rows of a layer's stacked (3, dp, dp) qkv weight its ToyICL layer has when one projection
# is shared (taken from layer 1): a slice, so that it stays a view.
_KEPT = {"value": slice(0, 2), "key": slice(0, 3, 2), "query": slice(1, 3)}


class StackedToyICL:
    """Parameters of V x S ToyICL runs (one list of seed-runs per variant), trained as one."""

    def __init__(self, runs: list[list[ToyICL]], device: torch.device | str = "cpu") -> None:
        first = runs[0][0]
        for row in runs:  # one architecture; one stream a row (variant)
            for m in row:
                if len(row) != len(runs[0]) or m.cfg != replace(
                    first.cfg, stream=row[0].cfg.stream
                ):
                    raise ConfigError("stacked runs must share one ToyICLConfig but the stream")
        self.n_layers, self.d = len(first.attn), first.cfg.d_in
        self.dp = -(-self.d // 8) * 8  # padded width, see _slots
        self.streams = [r[0].cfg.stream for r in runs]
        self.scale = None if first.cfg.scaled else 1.0
        self.n_mlp = len(first.mlp)
        self.dense_in = "mlp.0.weight" if self.n_mlp else "readout.weight"
        V, S = len(runs), len(runs[0])
        dtype = first.readout.weight.dtype
        self.params = {}
        for n, p in first.named_parameters():
            shape = p.shape
            if n.endswith("qkv.weight"):
                shape = (3, self.dp, self.dp)
            elif n == self.dense_in:
                shape = (shape[0], self.dp)
            if "stream_" not in n:
                self.params[n] = torch.zeros(V, S, *shape, device=device, dtype=dtype)
        inits = [_mix_init(s, self.n_layers) for s in self.streams]
        self.coef = torch.stack([c for c, _ in inits])[:, None].to(device, dtype)  # (V,1,L,3,2)
        self.learned = torch.stack([m for _, m in inits])[:, None].to(device)
        first_src = [s.source == "first" for s in self.streams]
        self.any_first = any(first_src)  # a Python bool: no device sync in the forward pass
        self.from_first = torch.tensor(first_src, device=device)
        if self.learned.any():  # learned mixes: one (V, S, L, 3, 2) tensor, used where learned
            mix = torch.where(self.learned, self.coef, 0.0)  # unused entries stay 0 under decay
            self.params["mix"] = mix.expand(-1, S, -1, -1, -1).clone()
        # Gates: which projection each variant gates ((V, 1, 3) of 0/1), and one zero-initialised
        # gate a layer for every run (gradients reach only the gated variants').
        gsel = torch.zeros(V, 1, 3)
        for v, st in enumerate(self.streams):
            if st.mix == "gated":
                gsel[v, 0, PROJECTIONS.index(st.kind)] = 1.0
        self.any_gated = bool(gsel.any())
        self.gate_sel = gsel.to(device, dtype)
        L = self.n_layers
        if self.any_gated:
            self.params["gate_w"] = torch.zeros(V, S, L, self.dp, device=device, dtype=dtype)
            self.params["gate_b"] = torch.zeros(V, S, L, device=device, dtype=dtype)
        # Smeared keys: a fixed coefficient (V, 1, L) (1 for key-smear-sum, else 0) and, where a
        # variant learns it, one (V, S, L) tensor from 0, used where learned.
        self.any_smear = any(st.smear for st in self.streams)
        fixed = [float(st.smear and not st.learned) for st in self.streams]
        self.smear_fixed = torch.tensor(fixed, device=device, dtype=dtype).view(V, 1, 1)
        learned_smear = [st.smear and st.learned for st in self.streams]
        self.smear_learned = torch.tensor(learned_smear, device=device).view(V, 1, 1)
        if any(learned_smear):
            self.params["smear"] = torch.zeros(V, S, L, device=device, dtype=dtype)
        for v, r in enumerate(runs):
            for s, m in enumerate(r):
                self.load_run(v, s, m.state_dict())
        for p in self.params.values():
            p.requires_grad_()

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens (..., d) -> (..., dp) with zero features (do it once per data chunk)."""
        return F.pad(x, (0, self.dp - x.size(-1)))

    # -- forward ------------------------------------------------------------------------------
    def _coefficients(self) -> torch.Tensor:
        if "mix" not in self.params:
            return self.coef
        return torch.where(self.learned, self.params["mix"], self.coef)

    def _smear_coefficients(self) -> torch.Tensor:
        """(V, 1 or S, L): each run's smear coefficient a layer (0 where it does not smear)."""
        if "smear" not in self.params:
            return self.smear_fixed
        return torch.where(self.smear_learned, self.params["smear"], self.smear_fixed)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Single-head attention over the last two dims; causal where q covers every position."""
        scale = self.d**-0.5 if self.scale is None else self.scale
        scores = (q @ k.mT) * scale
        T = k.size(-2)
        if q.size(-2) == T:
            causal = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
            scores = scores.masked_fill(causal, float("-inf"))
        return scores.softmax(-1) @ v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(S, B, T, d or dp) tokens, shared by the variants -> (V, S, B, labels) logits."""
        p, dp = self.params, self.dp
        if x.size(-1) != dp:
            x = self.pad(x)
        coef = self._coefficients()[..., None, None, None]  # (V, S, L, 3, 2, 1, 1, 1)
        smear = self._smear_coefficients()[..., None, None, None]  # (V, S, L, 1, 1, 1)
        h = x.unsqueeze(0)  # (1 or V, S, B, T, dp): the residual stream
        first = prev = None
        for i in range(self.n_layers):
            w = p[f"attn.{i}.qkv.weight"].flatten(-3, -2)  # (V, S, 3dp, dp)
            last = i == self.n_layers - 1
            if last and i > 0:  # the read-out sees the last token only: its query is all we need
                q = h[..., -1, :] @ w[..., :dp, :].mT
                own = [q.unsqueeze(-2), *_project(h, w[..., dp:, :]).split(dp, -1)]
            else:
                own = list(_project(h, w).split(dp, -1))
            if last:
                own[0] = own[0][..., -1:, :]
            mixed = own
            if i > 0:  # the stream: see the module docstring
                src = prev
                if i > 1 and self.any_first:
                    sel = self.from_first.view(-1, 1, 1, 1, 1)
                    src = [torch.where(sel, f, pv) for f, pv in zip(first, prev, strict=True)]
                c = coef[:, :, i]
                mixed = [
                    c[:, :, j, 0] * o + c[:, :, j, 1] * s[..., -o.size(-2) :, :]
                    for j, (o, s) in enumerate(zip(own, src, strict=True))
                ]
                if self.any_gated:  # (V, S, B, T, 1): sigmoid(x w + b) of each run's layer i
                    z = (h @ p["gate_w"][:, :, i, :, None].unsqueeze(2)).squeeze(-1)
                    g = torch.sigmoid(z + p["gate_b"][:, :, i, None, None]).unsqueeze(-1)
                    gs = self.gate_sel[..., None, None, None, :]  # (V, 1, 1, 1, 1, 3)
                    mixed = [
                        m + (gs[..., j] * g[..., -o.size(-2) :, :]) * (s[..., -o.size(-2) :, :] - o)
                        for j, (m, o, s) in enumerate(zip(mixed, own, src, strict=True))
                    ]
            if self.any_smear:  # k_t + c k_{t-1}: the raw key one position back, 0 before 0
                before = F.pad(own[1][..., :-1, :], (0, 0, 1, 0))
                mixed = [mixed[0], mixed[1] + smear[:, :, i] * before, mixed[2]]
            a = self._attend(*mixed)
            first = own if first is None else first
            prev = own
            h = h[..., -1, :] + a[..., -1, :] if last else h + a
        for j in range(self.n_mlp):
            h = F.relu(self._linear(h, f"mlp.{j}"))
        return self._linear(h, "readout")

    def _linear(self, h: torch.Tensor, name: str) -> torch.Tensor:
        """(V, S, B, in) -> (V, S, B, out) through each run's own layer (bias: one scalar, a
        vector, or none)."""
        w = self.params[f"{name}.weight"].flatten(0, 1).mT
        b = self.params.get(f"{name}.bias")
        if b is None:
            return torch.bmm(h.flatten(0, 1), w).unflatten(0, h.shape[:2])
        return torch.baddbmm(b.flatten(0, 1).unsqueeze(1), h.flatten(0, 1), w).unflatten(
            0, h.shape[:2]
        )

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of every run, (V, S); y is (S, B)."""
        logits = self.forward(x)
        V, S, B, n = logits.shape
        ce = F.cross_entropy(logits.reshape(-1, n), y.expand(V, S, B).reshape(-1), reduction="none")
        return ce.view(V, S, B).mean(-1)

    # -- one run's weights, in ToyICL's names --------------------------------------------------
    def _slots(self, of: dict[str, torch.Tensor], v: int, s: int | slice) -> dict:
        """ToyICL name -> (view into the stacked tensor, ToyICL's shape for it).

        Widths are padded from d to dp (a multiple of 8) with zeros: 16-byte aligned rows let
        the GEMMs use faster kernels. Zero features stay zero (their weights get zero
        gradients), so the padded model computes exactly the unpadded one."""
        d = self.d
        stream = self.streams[v]
        out = {}
        for n, t in of.items():
            if n in ("mix", "gate_w", "gate_b", "smear"):
                continue
            view = t[v, s]
            if n.endswith("qkv.weight"):
                view = view[..., :d, :d]
                if stream.mix == "shared" and n != "attn.0.qkv.weight":  # no own projection
                    view = view[..., _KEPT[stream.kind], :, :]
                out[n] = (view, (*view.shape[:-3], view.size(-3) * d, d))
            else:
                view = view[..., :d] if n == self.dense_in else view
                out[n] = (view, view.shape)
        if stream.mix == "gated":
            for i in range(1, self.n_layers):
                w, b = of["gate_w"][v, s, i, ..., :d], of["gate_b"][v, s, i]
                out[f"attn.{i}.stream_gate.weight"] = (w, (*w.shape[:-1], 1, d))
                out[f"attn.{i}.stream_gate.bias"] = (b, (*b.shape, 1))
        if stream.smear and stream.learned:
            shape = (1, 1, 1) if stream.mix == "learned-per-head" else (1,)
            for i in range(self.n_layers):
                c = of["smear"][v, s, i]
                out[f"attn.{i}.stream_smear"] = (c, (*c.shape, *shape))
        elif stream.learned:
            j = PROJECTIONS.index(stream.kind)
            for i in range(1, self.n_layers):
                m = of["mix"][v, s, i, j]  # (..., 2)
                shape = (2,) if stream.mix == "learned" else (2, 1, 1, 1)
                out[f"attn.{i}.stream_mix"] = (m, (*m.shape[:-1], *shape))
        return out

    def run_state(
        self, v: int, s: int | slice = slice(None), of: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """A copy of run (v, s)'s ToyICL state dict; a slice of seeds stacks them.
        `of`: tensors shaped like the parameters to read instead (their gradients, say)."""
        slots = self._slots(self.params if of is None else of, v, s)
        return {n: view.detach().reshape(shape).clone() for n, (view, shape) in slots.items()}

    @torch.no_grad()
    def load_run(self, v: int, s: int | slice, state: dict[str, torch.Tensor]) -> None:
        """Copy a ToyICL state dict (or a stack of them, for a slice of seeds) into run (v, s)."""
        for n, (view, _) in self._slots(self.params, v, s).items():
            view.copy_(state[n].reshape(view.shape))
