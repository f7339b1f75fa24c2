"""The transformers reference PRM: the same scores as the vLLM adapters, from a plain forward pass.

Contract: `TransformersPRM(path, spec)` renders candidates in the PRM's format (`verifiers.prm_format`)
and returns P(good) at every step tag, as each format's model card defines it:
- `ponder` and `math-shepherd` (causal LMs): softmax over the logits of the good and the bad token,
  i.e. sigmoid(logit[good] - logit[bad]), the definition our PRM was trained with;
- `qwen` (`Qwen2ForProcessRewardModel`): the Qwen2 body, then the score head Linear(h, h), ReLU,
  Linear(h, 2) read from the checkpoint, softmax over the 2 classes, class 1.
Used by tests (agreement with vLLM, per format) and by machines without vLLM's pooling runner; `score`
runs it off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from engines.spec import PRMSpec, read_prm_spec, verdict_tokens
from engines.usage import Usage
from verifiers.prm import Candidate, Scores
from verifiers.prm_format import prm_format, tag_positions


def verdict_logits(logits: torch.Tensor, good_id: int, bad_id: int) -> torch.Tensor:
    """logit[good] - logit[bad] at every position: the PRM's log-odds that the solution still succeeds."""
    return logits[..., good_id] - logits[..., bad_id]


class TransformersPRM:
    def __init__(self, path: str | Path, spec: PRMSpec | None = None, batch_size: int = 64) -> None:
        """`spec`: how the PRM reads; by default the one recorded beside its weights."""
        from transformers import AutoTokenizer

        self.spec = spec or read_prm_spec(path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.format = prm_format(self.spec, self.tokenizer)
        self.probabilities = (
            QwenHead(Path(path))
            if self.spec.format == "qwen"
            else VerdictTokens(Path(path), self.spec, self.tokenizer)
        )
        self.max_model_len = self.probabilities.max_model_len
        self.batch_size = batch_size

    @property
    def is_healthy(self) -> bool:
        return True  # a forward pass in this process: no engine that could die

    async def probe(self) -> dict[str, bool]:
        return {}  # in-process: nothing to ask

    def scored_length(self, candidate: Candidate) -> int:
        return len(self.format.render(candidate))

    @torch.no_grad()
    def score_ids(self, sequences: Sequence[Sequence[int]], steps: Sequence[int]) -> list[list[float]]:
        """P(good) at each step tag of each rendered input (`steps`: the tags each must hold)."""
        results: list[list[float]] = []
        for start in range(0, len(sequences), self.batch_size):
            chunk = sequences[start : start + self.batch_size]
            width = max(len(s) for s in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, seq in enumerate(chunk):
                ids[row, : len(seq)] = torch.tensor(list(seq))
                mask[row, : len(seq)] = 1
            probs = self.probabilities(ids, mask)
            for row, seq in enumerate(chunk):
                tags = tag_positions(self.format, seq, steps[start + row])
                results.append(probs[row, tags].tolist())
        return results

    async def score(self, candidates: Sequence[Candidate], request_id: str) -> Scores:
        inputs = [self.format.render(c) for c in candidates]
        steps = [len(c.steps) for c in candidates]
        scores = await asyncio.to_thread(self.score_ids, inputs, steps)
        return Scores(scores, Usage(scored_tokens=sum(map(len, inputs)), verifier_calls=len(inputs)))

    async def abort(self, request_id: str) -> None:
        """Nothing to abort: a forward pass is not interruptible and finishes quickly."""


class VerdictTokens:
    """A causal LM's P(good) at every position: sigmoid(logit[good] - logit[bad])."""

    def __init__(self, path: Path, spec: PRMSpec, tokenizer: Any) -> None:
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
        good, bad = verdict_tokens(tokenizer, spec)
        self.good_id = int(tokenizer.convert_tokens_to_ids(good))
        self.bad_id = int(tokenizer.convert_tokens_to_ids(bad))
        self.max_model_len = int(self.model.config.max_position_embeddings)

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        return torch.sigmoid(verdict_logits(logits.float(), self.good_id, self.bad_id))


class QwenHead:
    """`Qwen2ForProcessRewardModel`'s P(class 1) at every position: the body's hidden states through the
    checkpoint's score head (`score.0`, ReLU, `score.2`)."""

    def __init__(self, path: Path) -> None:
        from safetensors.torch import load_file
        from transformers import Qwen2Model

        self.body = Qwen2Model.from_pretrained(str(path), dtype=torch.float32).eval()
        weights = {k: v.float() for k, v in load_weights(path, load_file).items() if k.startswith("score.")}
        hidden = int(self.body.config.hidden_size)
        self.head = torch.nn.Sequential(
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2)
        )
        self.head.load_state_dict({k.removeprefix("score."): v for k, v in weights.items()})
        self.max_model_len = int(self.body.config.max_position_embeddings)

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.body(input_ids=ids, attention_mask=mask).last_hidden_state
        return torch.softmax(self.head(hidden.float()), dim=-1)[..., 1]


def load_weights(path: Path, load_file: Any) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory's safetensors files."""
    weights: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        weights.update(load_file(str(file)))
    return weights
