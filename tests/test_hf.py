"""Streams inside Hugging Face transformers models, on tiny random configs built here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from attnstreams.data.tokenizer import BPETokenizer  # noqa: E402
from attnstreams.models.gpt import GPT, GPTConfig  # noqa: E402
from attnstreams.models.hf import add_streams, from_pretrained, stream_state  # noqa: E402
from attnstreams.run.config import ConfigError  # noqa: E402

V = 128


def llama(**kw):
    cfg = transformers.LlamaConfig(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        rms_norm_eps=1e-5, tie_word_embeddings=True, **kw,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def gpt2():
    cfg = transformers.GPT2Config(
        vocab_size=V, n_positions=64, n_embd=32, n_layer=3, n_head=4, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(cfg).eval()


MODELS = {"llama": llama, "gpt2": gpt2}
IDX = torch.randint(V, (2, 12), generator=torch.Generator().manual_seed(1))


def set_mix(model, w1: float) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("stream_mix"):
                p[1] = w1


@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("stream", ["value-learned", "key-first-learned-per-head", "query-learned"])
def test_patched_model_computes_what_it_did(family, stream):
    model = MODELS[family]()
    before = model(IDX).logits
    add_streams(model, stream)
    assert len(stream_state(model)) == 2  # layers 2 and 3 mix
    torch.testing.assert_close(model(IDX).logits, before, rtol=0, atol=0)
    set_mix(model, 0.5)
    assert (model(IDX).logits - before).abs().max() > 1e-4  # and the stream does something


def to_ours(hf) -> GPT:
    """Our modern block with a Llama model's weights."""
    c = hf.config
    cfg = GPTConfig(
        vocab_size=V, block_size=64, n_layer=c.num_hidden_layers, n_head=c.num_attention_heads,
        n_kv_head=c.num_key_value_heads, n_embd=c.hidden_size, dropout=0.0, vocab_multiple=1,
        pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, mlp_hidden=c.intermediate_size,
        stream=getattr(c, "attnstreams_stream", "none"),
    )  # fmt: skip
    ours = GPT(cfg).eval()
    sd = {"wte.weight": hf.model.embed_tokens.weight, "ln_f.weight": hf.model.norm.weight}
    for i, layer in enumerate(hf.model.layers):
        a, m = layer.self_attn, layer.mlp
        p = f"blocks.{i}."
        sd[p + "attn.qkv.weight"] = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
        sd[p + "attn.proj.weight"] = a.o_proj.weight
        sd[p + "mlp.fc.weight"] = torch.cat([m.gate_proj.weight, m.up_proj.weight])
        sd[p + "mlp.proj.weight"] = m.down_proj.weight
        sd[p + "ln1.weight"] = layer.input_layernorm.weight
        sd[p + "ln2.weight"] = layer.post_attention_layernorm.weight
        if hasattr(a.v_proj, "stream_mix"):
            sd[p + "attn.stream_mix"] = a.v_proj.stream_mix
    sd["lm_head.weight"] = sd["wte.weight"]
    ours.load_state_dict(sd)
    return ours


@pytest.mark.parametrize("stream", ["none", "value-learned", "value-learned-per-head"])
def test_our_modern_block_is_llama_and_the_streams_agree(stream):
    """Our RoPE / RMSNorm / SwiGLU / GQA block with a Llama model's weights gives its logits;
    with the stream added to both (mix weights away from the start), still the same."""
    hf = llama()
    if stream != "none":
        add_streams(hf, stream)
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if name.endswith("stream_mix"):
                    p.copy_(torch.rand_like(p) + 0.5)
    ours = to_ours(hf)
    torch.testing.assert_close(ours(IDX)[0], hf(IDX).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", MODELS)
def test_generate_with_the_cache_equals_full_forward_decoding(family):
    model = add_streams(MODELS[family](), "value-learned")
    set_mix(model, 0.7)
    prompt = IDX[:1, :5]
    out = model.generate(prompt, max_new_tokens=8, do_sample=False, pad_token_id=0)
    seq = prompt
    for _ in range(8):  # no cache: the whole sequence every step
        nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(out, seq)


@pytest.mark.parametrize("family", MODELS)
def test_save_and_load_keep_the_mix_weights(family, tmp_path):
    model = add_streams(MODELS[family](), "value-first-learned-per-head")
    set_mix(model, 0.3)
    ref = model(IDX).logits
    model.save_pretrained(tmp_path / "m")
    back = from_pretrained(tmp_path / "m").eval()
    assert back.config.attnstreams_stream == "value-first-learned-per-head"
    for k, v in stream_state(model).items():
        torch.testing.assert_close(stream_state(back)[k], v)
    torch.testing.assert_close(back(IDX).logits, ref, rtol=1e-5, atol=1e-5)


def test_a_short_fine_tune_moves_the_mix_weight():
    model = add_streams(llama(), "value-learned").train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(5):
        loss = model(IDX, labels=IDX).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    w = [p.detach() for n, p in model.named_parameters() if n.endswith("stream_mix")]
    assert all(abs(float(x[1])) > 1e-3 for x in w)


def test_unsupported_models_and_streams_are_refused():
    bert = transformers.BertForMaskedLM(
        transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=64)
    )  # fmt: skip
    with pytest.raises(ConfigError, match="supports model types llama"):
        add_streams(bert, "value-learned")
    with pytest.raises(ConfigError, match="learned mix"):
        add_streams(llama(), "value")  # unit weights: would change the model
    with pytest.raises(ConfigError, match="'key-smear' mixes keys across positions"):
        add_streams(llama(), "key-smear")
    model = add_streams(llama(), "value-learned")
    with pytest.raises(ConfigError, match="already has a stream"):
        add_streams(model, "value-learned")
    checkpointed = llama()
    enable = getattr(checkpointed, "activation_checkpointing_enable", None)
    (enable or checkpointed.gradient_checkpointing_enable)()
    with pytest.raises(ConfigError, match="gradient checkpointing"):
        add_streams(checkpointed, "value-learned")
    patched = add_streams(llama(), "value-learned")  # enabled after the patch: refused too
    for name in ("activation_checkpointing_enable", "gradient_checkpointing_enable"):
        if hasattr(patched, name):
            with pytest.raises(ConfigError, match="gradient checkpointing"):
                getattr(patched, name)()


# -- lm train --init-from ----------------------------------------------------------------------
FIXTURE = Path(__file__).parent / "fixtures" / "tinystories-sample.txt"


def local_model(folder: Path) -> Path:
    """A tiny Llama saved with a tokenizer of its own (trained on the fixture): what a user's
    downloaded model folder holds."""
    texts = FIXTURE.read_text().split("<|endoftext|>")
    tok = BPETokenizer.train(texts, 512)
    model = llama_with_vocab(tok.vocab_size)
    model.save_pretrained(folder)
    tok._tok.save(str(folder / "tokenizer.json"))
    return folder


def llama_with_vocab(vocab: int):
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg)


def test_lm_train_continues_a_local_model_with_a_stream(tmp_path, capsys):
    from attnstreams.cli import main

    src = local_model(tmp_path / "llama")
    argv = [
        "lm", "train", "--init-from", str(src), "--stream", "value-learned", "--data",
        str(FIXTURE), "--train-tokens", "20000", "--val-tokens", "1000", "--steps", "6",
        "--batch", "4", "--block-size", "32", "--eval-every", "3", "--eval-batches", "2",
        "--ioi-prompts", "8", "--lr", "1e-2", "--warmup", "1", "--out", str(tmp_path / "run"),
        "--json",
    ]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 3, 6] and rows[-1]["val_loss"] < rows[0]["val_loss"]
    back = from_pretrained(tmp_path / "run" / "hf")
    (w,) = stream_state(back).values()
    assert float(w[0]) != 1.0 and abs(float(w[1])) > 1e-3  # the mix learned
    assert (tmp_path / "run" / "hf" / "tokenizer.json").is_file()
    # The checkpoint evaluates through the same model folder.
    ckpt = str(tmp_path / "run" / "checkpoint.safetensors")
    assert main(["lm", "eval", ckpt, "--json", "--ioi-prompts", "8"]) == 0
    assert "induction_score" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # and samples, past its 32-token context (it was an AttributeError: no generate)
    assert main(["lm", "sample", ckpt, "--prompt", "Once", "--max-new-tokens", "40"]) == 0
    assert capsys.readouterr().out.startswith("Once")


@pytest.mark.parametrize(
    "what", ["no-config", "bert", "stream-none-tokenizer", "stream-not-learned"]
)
def test_init_from_errors_are_one_line(tmp_path, capsys, what):
    from attnstreams.cli import main

    folder = tmp_path / "m"
    folder.mkdir()
    if what == "bert":
        transformers.BertForMaskedLM(
            transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64)
        ).save_pretrained(folder)  # fmt: skip
        local_tok = BPETokenizer.train(FIXTURE.read_text().split("<|endoftext|>")[:50], 300)
        local_tok._tok.save(str(folder / "tokenizer.json"))
    if what == "stream-none-tokenizer":
        llama_with_vocab(64).save_pretrained(folder)  # no tokenizer.json
    if what == "stream-not-learned":
        local_model(folder)
    capsys.readouterr()  # what making the folder printed
    stream = "value" if what == "stream-not-learned" else "value-learned"
    argv = ["lm", "train", "--init-from", str(folder), "--stream", stream, "--data",
            str(FIXTURE), "--steps", "1", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnstreams: error:"), err
    want = {"no-config": "config.json", "bert": "supports model types llama",
            "stream-none-tokenizer": "tokenizer", "stream-not-learned": "learned mix"}  # fmt: skip
    assert want[what] in err[0], err
    assert not (tmp_path / "run").exists()  # refused before any folder was made
