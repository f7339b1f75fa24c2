"""Task sets: the built-in Countdown family and loaders for user-supplied JSONL task sets.

Contract: every task is a `Task` (id, prompt text, reference answer, tier). Generators are seeded and
reproducible; nothing here talks to a model or an engine.
"""
