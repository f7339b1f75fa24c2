"""Evaluation: held-out metrics of checkpoints and engine benchmarks, written to `results/`.

Contract: every figure in `results/` comes from a command here (`ponder eval ...`, `ponder bench ...`), run
on the real vLLM engines; nothing is estimated or copied by hand.
"""
