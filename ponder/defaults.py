"""Where the embedded default models live: shipped in the repo, made by `ponder train --recipe default`."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODELS = Path(__file__).parent / "models" / "default"
DEFAULT_POLICY = DEFAULT_MODELS / "policy"
DEFAULT_PRM = DEFAULT_MODELS / "prm"
