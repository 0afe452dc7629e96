"""Residual attention streams inside Hugging Face transformers models (`attnstreams[hf]`).

    model = AutoModelForCausalLM.from_pretrained(path)
    add_streams(model, "value-learned")     # the model still computes exactly what it did
    ...train; model.save_pretrained(out)    # the mix weights are saved with the model
    model = from_pretrained(out)            # transformers' loader, then the stream put back

The stream is added as forward hooks on each attention layer's projection (Llama family:
`v_proj`, `k_proj` or `q_proj`; GPT-2: the value, key or query third of `c_attn`), so the
model's own attention, cache, `generate()` and attention kernels run unchanged. A layer hands
its own projection to the next (or layer 1's to every later layer, `-first`) through a holder
the hooks share; projections are position-wise, so cached decoding sees exactly the values a
full forward pass would. The added mix is learned and starts at (1, 0): weight 1 on the layer's
own projection and 0 on the handed-on one, so a pretrained checkpoint continues from the very
function it computed, with the stream learning its weight. The mix and its parameter shapes
are streams.py's (`learned_mix`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from attnstreams.models.sampling import sample
from attnstreams.run.config import ConfigError, check_int
from attnstreams.streams import StreamConfig, learned_mix

LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3")  # q_proj / k_proj / v_proj attention
SUPPORTED = (*LLAMA_FAMILY, "gpt2")
CONFIG_KEY = "attnstreams_stream"  # the stream's name in the model's config.json
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


class _Holder:
    """What layer n hands on to layer n+1 during one forward pass (a plain object, not a
    module: nothing of it is saved; the last layer empties it)."""

    carry: torch.Tensor | None = None


def check_model_folder(path: str | Path) -> Path:
    """A local transformers model folder of a supported type (read from its config.json)."""
    path = Path(path)
    try:
        mtype = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        raise ConfigError(
            f"{path}: not a transformers model folder (no readable config.json)"
        ) from None
    _check_type(mtype, str(path))
    return path


def _check_type(mtype: str | None, what: str) -> None:
    if mtype not in SUPPORTED:
        raise ConfigError(
            f"add_streams supports model types {', '.join(SUPPORTED)}; {what} is {mtype!r}"
        )


def _layers(model: nn.Module) -> tuple[list[nn.Module], str]:
    """(attention modules in order, model type), or a one-line error naming what is supported."""
    mtype = getattr(getattr(model, "config", None), "model_type", None)
    _check_type(mtype, "the model")
    base = getattr(model, "model", None) or getattr(model, "transformer", None) or model
    if mtype == "gpt2":
        return [block.attn for block in base.h], mtype
    return [layer.self_attn for layer in base.layers], mtype


def _heads(model: nn.Module, kind: str) -> tuple[int, int]:
    c = model.config
    heads = c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return (heads if kind == "query" else kv), head_dim


def check_stream(stream: str | StreamConfig) -> StreamConfig:
    """The stream if `add_streams` can add it, else a one-line ConfigError."""
    cfg = StreamConfig.parse(stream)
    if cfg.smear:  # a hook sees one call's keys: in cached decoding, not the one before
        raise ConfigError(
            f"add_streams mixes projections across layers; {cfg.name!r} mixes keys across "
            "positions, which a projection hook cannot do in cached decoding (GPT has it)"
        )
    if not cfg.learned or cfg.source == "embed":
        raise ConfigError(
            "add_streams adds a learned mix from a layer's projection (e.g. 'value-learned', "
            f"'value-first-learned-per-head'), which can start at zero weight; got {cfg.name!r}"
        )
    return cfg


def add_streams(model: nn.Module, stream: str | StreamConfig) -> nn.Module:
    """Add a learned residual stream to a transformers causal LM, in place; returns it.

    `stream`: a learned stream name ('value-learned', 'value-learned-per-head',
    'value-first-learned', 'key-learned', ...). The mix weights start at (1, 0), so the
    patched model's outputs equal the original's until training moves them."""
    cfg = check_stream(stream)
    attns, mtype = _layers(model)
    if len(attns) < 2:
        raise ConfigError(f"a stream needs at least 2 attention layers, the model has {len(attns)}")
    if getattr(model.config, CONFIG_KEY, None):
        raise ConfigError("this model already has a stream")
    name = "is_activation_checkpointing"  # transformers 5 (4: is_gradient_checkpointing)
    if not hasattr(type(model), name):
        name = "is_gradient_checkpointing"
    if getattr(model, name, False):
        raise ConfigError("streams do not work with gradient checkpointing (layers are re-run)")
    heads, head_dim = _heads(model, cfg.kind)
    holder = _Holder()
    for i, attn in enumerate(attns):
        if mtype == "gpt2":
            proj, part = attn.c_attn, ("query", "key", "value").index(cfg.kind)
        else:
            proj, part = (
                getattr(attn, {"value": "v_proj", "key": "k_proj", "query": "q_proj"}[cfg.kind]),
                None,
            )
        if i > 0:
            shape = (2,) if cfg.mix == "learned" else (2, heads, 1, 1)
            w = torch.zeros(shape, device=proj.weight.device, dtype=proj.weight.dtype)
            w[0] = 1.0
            proj.register_parameter("stream_mix", nn.Parameter(w))
        last = i == len(attns) - 1
        proj.register_forward_hook(_hook(cfg, i, last, holder, heads, head_dim, part))
    setattr(model.config, CONFIG_KEY, cfg.name)
    for enable in ("activation_checkpointing_enable", "gradient_checkpointing_enable"):
        if hasattr(model, enable):  # the order a Trainer uses: patched first, then enabled
            setattr(model, enable, _no_checkpointing)
    return model


def _no_checkpointing(*args, **kwargs) -> None:
    raise ConfigError(
        "streams do not work with gradient checkpointing (layers are re-run, and each hands "
        "its projection on): leave it off for a model with a stream"
    )


def _hook(
    cfg: StreamConfig, layer: int, last: bool, holder: _Holder, heads: int, head_dim: int,
    part: int | None,
):  # fmt: skip
    """The forward hook of layer `layer`'s projection (`part`: its third of GPT-2's c_attn)."""

    def mixed(module: nn.Module, own: torch.Tensor) -> torch.Tensor:
        carry = holder.carry
        if layer == 0 or cfg.source == "previous":
            holder.carry = own
        if last:  # nothing is kept between forward passes
            holder.carry = None
        if layer == 0:
            return own
        if carry is None or carry.shape != own.shape:
            raise RuntimeError(f"layer {layer}: no projection handed on (layers run out of order?)")
        shape = (*own.shape[:-1], heads, head_dim)  # (B, T, heads * hd) -> (B, heads, T, hd)
        out = learned_mix(
            module.stream_mix,
            own.view(shape).transpose(-3, -2),
            carry.view(shape).transpose(-3, -2),
        )
        return out.transpose(-3, -2).reshape(own.shape)

    def hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        if part is None:
            return mixed(module, output)
        parts = list(output.chunk(3, dim=-1))  # GPT-2's c_attn: query, key, value
        parts[part] = mixed(module, parts[part])
        return torch.cat(parts, dim=-1)

    return hook


def stream_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The added parameters, under the model's own state-dict names."""
    return {k: v for k, v in model.state_dict().items() if k.endswith("stream_mix")}


def from_pretrained(path: str | Path, **kwargs) -> nn.Module:
    """Load a model saved after add_streams: transformers' loader (which skips the mix
    weights it does not know), the stream added again, then its saved weights read back."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    path = Path(path)
    stream = json.loads((path / "config.json").read_text()).get(CONFIG_KEY)

    level = logging.get_verbosity()
    if stream is not None:  # its load report would list the mix weights as unexpected
        logging.set_verbosity_error()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    finally:
        logging.set_verbosity(level)
    if stream is None:
        return model
    delattr(model.config, CONFIG_KEY)
    add_streams(model, stream)
    want = stream_state(model)
    found: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(file, framework="pt") as f:
            for k in f.keys():
                if k.endswith("stream_mix"):
                    found[k] = f.get_tensor(k)
    missing = sorted(set(want) - set(found))
    if missing:
        raise ConfigError(f"{path}: saved with stream {stream!r} but its mix weights are missing")
    model.load_state_dict(found, strict=False)
    return model


@dataclass(frozen=True)
class HFModelConfig:
    """What the LM trainer reads off a model (GPTConfig's fields it uses), for a transformers
    model continued from a local folder."""

    init_from: str
    stream: str
    vocab_size: int
    block_size: int

    def to_dict(self) -> dict:
        """JSON-ready, as GPTConfig.to_dict: what a checkpoint's metadata records."""
        return asdict(self)


class HFCausalLM(nn.Module):
    """A local transformers causal LM, a stream added, behind our GPT's interface:
    forward(idx, targets) -> (logits, mean cross-entropy), `cfg.block_size`, `cfg.vocab_size`.
    A model saved with a stream keeps it (and its weights); `stream` must then name it."""

    def __init__(self, path: str | Path, stream: str = "none", block_size: int | None = None):
        super().__init__()
        if block_size is not None:
            check_int("block_size", block_size, lo=1)
        path = check_model_folder(path)
        try:
            self.hf = from_pretrained(path, local_files_only=True)
        except ConfigError:
            raise
        except Exception as e:  # transformers' own errors: unknown architecture, bad weights
            raise ConfigError(f"--init-from {path}: {str(e).splitlines()[0]}") from None
        stream = StreamConfig.parse(stream)
        saved = getattr(self.hf.config, CONFIG_KEY, None)
        if saved is not None and stream.name != saved:
            raise ConfigError(f"{path} already has stream {saved!r}; --stream must name it")
        if saved is None and stream.active:
            add_streams(self.hf, stream)
        c = self.hf.config
        limit = getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)
        if block_size is not None and limit is not None and block_size > limit:
            raise ConfigError(f"--block-size {block_size} exceeds the model's context ({limit})")
        self.cfg = HFModelConfig(str(path), stream.name, c.vocab_size, block_size or limit)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters (each once), without the input embedding if non_embedding."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.hf.get_input_embeddings().weight.numel() if non_embedding else n

    generate = sample  # as GPT's, without a cache: a full forward a token

    def save_pretrained(self, folder: Path) -> None:
        """The model as a transformers folder (stream and mix weights included), with the
        tokenizer files of the folder it came from: `from_pretrained` reads it back."""
        import shutil

        self.hf.save_pretrained(folder)
        for name in TOKENIZER_FILES:
            if (Path(self.cfg.init_from) / name).is_file():
                shutil.copy(Path(self.cfg.init_from) / name, Path(folder) / name)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and, given targets, the mean cross-entropy (our GPT's interface)."""
        from attnstreams.models.gpt import cross_entropy

        if cache is not None:
            raise ValueError("use the transformers model's own generate() for cached decoding")
        logits = self.hf(input_ids=idx, use_cache=False).logits
        loss = None
        if targets is not None:
            loss = cross_entropy(logits, targets, self.cfg.vocab_size)
            logits = logits.detach()
        return logits, loss
