"""tinylm: the reference workloads of Substratus, small enough to run on a laptop's CPU.

A character-level causal language model (the next character given the two before it), kept
as safetensors + config.json + tokenizer.json, with the programs that follow the container
contract: a dataset loader, a model loader, a trainer and an OpenAI-compatible server.
Standard library only.
"""

__version__ = "0.3.0"
