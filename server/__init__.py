"""The OpenAI-compatible HTTP server (`ponder serve`): thin routes over serving classes that get the
engines injected. Arrives with the server issue; until then `ponder serve` runs a smoke generation.
"""
