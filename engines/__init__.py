"""Policy engines: the one place that talks to the model that writes solutions.

Contract: a `PolicyEngine` expands a batch of token-id prefixes by one step (n samples each, stopped at the
step delimiter) or rolls them out to the end, reports exact token usage for every call, and aborts all
in-flight work of a search by its request id. Prefixes are token ids, never re-rendered text, so vLLM's
prefix cache does the work.
"""
