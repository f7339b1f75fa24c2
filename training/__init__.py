"""Training: the `ponder train` entrypoint that produces the policy and PRM checkpoints Ponder serves.

Contract: a recipe file (TOML, in `training/recipes/`) fully defines a run; every stage writes Hugging Face
checkpoint directories (safetensors, config, tokenizer, generation config) plus a `ponder_card.json` with
the recipe and the metrics measured on it. Training runs in its own process, never in the server.
"""
