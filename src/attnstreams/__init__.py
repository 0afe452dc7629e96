"""attnstreams: AMICL and residual attention streams.

Where to start (each a submodule, imported on use so that `import attnstreams` stays fast):

- `attnstreams.amicl`: the associative-memory model of in-context learning.
  `run(AMICLConfig(a=1.5), trials=10_000).accuracy` gives one accuracy of the paper's table.
- `attnstreams.streams`: `StreamAttention`, a drop-in attention layer holding a value, key or
  query residual stream (`stream="value"`, `"value-learned"`, ...; `StreamConfig` parses them).
- `attnstreams.models.gpt`: `GPT(preset("tinystories-8m", stream="value"))`, GPT-2-style and
  modern (RoPE, RMSNorm, SwiGLU, GQA) language models with streams.
- `attnstreams.models.hf`: `add_streams(model, "value-learned")` puts a stream into a Hugging
  Face Llama-family or GPT-2 model; `from_pretrained(path)` loads one saved with it.
- The command line, `attnstreams --help` (or `python -m attnstreams --help`): the experiments
  (`amicl`, `icl`, `lm`) and `reproduce`, which writes the paper's report with its figures.
"""

__version__ = "0.1.0"
