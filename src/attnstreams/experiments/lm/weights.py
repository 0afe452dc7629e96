"""A language model's weights in and out of checkpoint tensors (run/checkpoint.py keeps the
file): tied weights stored once, other architectures refused in one line, and a trained model
rebuilt from its checkpoint alone."""

from __future__ import annotations

from pathlib import Path

import torch

from attnstreams.models.gpt import GPT
from attnstreams.run import checkpoint
from attnstreams.run.config import ConfigError


def shared_keys(model: torch.nn.Module) -> dict[str, str]:
    """State-dict names that repeat an earlier name's tensor (tied weights) -> that name."""
    first: dict[int, str] = {}
    out = {}
    for k, v in model.state_dict(keep_vars=True).items():
        if id(v) in first:
            out[k] = first[id(v)]
        else:
            first[id(v)] = k
    return out


def model_tensors(tensors: dict[str, torch.Tensor], model: torch.nn.Module) -> dict:
    """The model's state dict inside checkpoint tensors (tied weights restored)."""
    state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
    for k, kept in shared_keys(model).items():
        if kept in state:
            state.setdefault(k, state[kept])
    return state


def load_model_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Model weights from checkpoint tensors; a clear error on other architectures."""
    state = model_tensors(tensors, model)
    own = model.state_dict()
    if set(state) != set(own):
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        raise ConfigError(
            f"checkpoint does not fit this model (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ConfigError(
                f"checkpoint tensor {k} has shape {tuple(v.shape)}, model {tuple(own[k].shape)}"
            )
    model.load_state_dict(state)


def load_model(path: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """A trained model from a checkpoint, built with its own architecture (eval mode): a GPT,
    or for a run continued from a transformers folder (`--init-from`) that model."""
    from attnstreams.models.gpt import GPTConfig
    from attnstreams.streams import StreamConfig

    tensors, meta = checkpoint.load(path)
    if meta.get("kind") != "lm":
        raise ConfigError(f"{path} is not a language-model checkpoint")
    m = dict(meta["model"])
    if "init_from" in m:  # a transformers model: its folder gives the architecture
        from attnstreams.models.hf import HFCausalLM

        model = HFCausalLM(m["init_from"], m["stream"], m["block_size"])
    else:
        m["stream"] = StreamConfig.parse(m["stream"])
        m.setdefault("vocab_multiple", 1)  # checkpoints from before the embedding was padded
        model = GPT(GPTConfig(**m))
    load_model_state(model, tensors)
    return model.to(device).eval(), meta
