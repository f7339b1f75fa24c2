"""The compute unit: what each kind of token costs, in generated-token equivalents.

Contract:
- `CostWeights` prices the five kinds of token a search spends relative to one **generated** token
  (1.0 by definition): a prompt token the policy prefilled, a prompt token served from its prefix cache,
  a token the PRM computed, and a token the PRM served from its prefix cache. Weights are finite and
  >= 0. `units(usage)` is what a `Usage` costs: the one number a budget counts.
- `for_generation` and `for_scoring` price calls as the metered adapters reserve them (the worst case:
  no prompt or PRM token cached), which is also how searchers plan their rounds (`SearchContext`).
- `from_rates` turns measured tokens/s of each kind into weights (a weight is the generated rate over
  that kind's rate); `dump` / `load` write and read them as JSON (`cost_weights.json`, with how and
  where they were measured); `if_measured(path)` reads a file that exists, else gives the defaults.
- The defaults (`CostWeights()`) are uncalibrated and say so (`measured` is None). Prefilled and scored
  tokens are 0.37: on this project's 2-core CPU, `ponder bench` measured the policy at 3,479 generated
  tokens/s and the PRM (the same 5.4M-parameter architecture, so one PRM token is one prefill token's
  forward pass) at 9,451 scored tokens/s, and 3,479 / 9,451 = 0.37. Prefix-cache hits run no forward
  pass, only block look-ups and scheduling: 0.02, a guess that is not measured. On a GPU, decoding is
  memory-bound and prefill is not, so prefill is relatively far cheaper there: calibrate
  (`ponder bench --calibrate`) on the deployment.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.usage import Usage

GENERATED = 1.0  # the unit: one generated token
WEIGHTS_FILE = "cost_weights.json"
KINDS = ("prefilled", "cached_prompt", "scored", "cached_scored")  # priced relative to a generated token


@dataclass(frozen=True)
class CostWeights:
    prefilled: float = 0.37  # a prompt token the policy computed (prefill)
    cached_prompt: float = 0.02  # a prompt token served from the policy's prefix cache
    scored: float = 0.37  # a token the PRM computed
    cached_scored: float = 0.02  # a token the PRM served from its prefix cache
    measured: str | None = None  # how and where they were measured; None: the uncalibrated defaults

    def __post_init__(self) -> None:
        for kind in KINDS:
            weight = getattr(self, kind)
            if not (isinstance(weight, int | float) and math.isfinite(weight) and weight >= 0):
                raise ValueError(f"the weight of a {kind} token must be a finite number >= 0, got {weight!r}")

    @property
    def generated(self) -> float:
        return GENERATED

    # --- what usage costs -----------------------------------------------------------------------
    def units(self, usage: Usage) -> float:
        return (
            usage.generated_tokens * GENERATED
            + usage.prefilled_prompt_tokens * self.prefilled
            + usage.cached_prompt_tokens * self.cached_prompt
            + (usage.scored_tokens - usage.cached_scored_tokens) * self.scored
            + usage.cached_scored_tokens * self.cached_scored
        )

    # --- what a call may cost at most (what the adapters reserve, and planners plan with) ---------
    @property
    def prompt_token_at_most(self) -> float:
        """A prompt token, cached or not (a weight may be set above the prefill one; the worst counts)."""
        return max(self.prefilled, self.cached_prompt)

    @property
    def scored_token_at_most(self) -> float:
        return max(self.scored, self.cached_scored)

    def for_generation(self, generated: float, prompt: float = 0.0) -> float:
        """Units of generating `generated` tokens after sending `prompt` prompt tokens, none cached."""
        return generated * GENERATED + prompt * self.prompt_token_at_most

    def for_scoring(self, tokens: float) -> float:
        """Units of the PRM reading `tokens` tokens, none cached."""
        return tokens * self.scored_token_at_most

    # --- calibration and its file ---------------------------------------------------------------
    @classmethod
    def from_rates(cls, generated: float, rates: dict[str, float], measured: str) -> CostWeights:
        """Weights from measured tokens/s: `generated` for decoding, `rates[kind]` for each of `KINDS`."""
        missing = sorted(set(KINDS) - set(rates))
        if missing:
            raise ValueError(f"no measured rate for {', '.join(missing)}")
        for kind, rate in [("generated", generated), *rates.items()]:
            if not (math.isfinite(rate) and rate > 0):
                raise ValueError(f"the {kind} rate must be a positive number of tokens/s, got {rate!r}")
        return cls(**{kind: round(generated / rates[kind], 4) for kind in KINDS}, measured=measured)

    def as_dict(self) -> dict[str, Any]:
        """The weights as the API's `search.cost_weights` and the file show them."""
        return {
            "generated": GENERATED,
            **{kind: getattr(self, kind) for kind in KINDS},
            "measured": self.measured,
        }

    def dump(self, path: Path, **extra: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**self.as_dict(), **extra}, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> CostWeights:
        data = json.loads(path.read_text())
        if float(data.get("generated", GENERATED)) != GENERATED:
            raise ValueError(f"{path}: a generated token is the unit, its weight is 1.0 by definition")
        missing = [kind for kind in KINDS if kind not in data]
        if missing:
            raise ValueError(f"{path}: no weight for {', '.join(missing)}")
        measured = data.get("measured")
        return cls(
            **{kind: float(data[kind]) for kind in KINDS},
            measured=None if measured is None else str(measured),
        )

    @classmethod
    def if_measured(cls, path: Path | None) -> CostWeights:
        """The weights at `path` (`MODELS/cost_weights.json`) if a file is there, else the defaults."""
        return cls.load(path) if path is not None and path.exists() else cls()
