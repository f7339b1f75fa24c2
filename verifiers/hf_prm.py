"""The transformers reference PRM: the same scores as the vLLM adapter, from a plain forward pass.

Contract: `TransformersPRM.score_ids` returns sigmoid(logit[good] - logit[bad]) at every step-tag
position, the definition the PRM was trained with. Used by tests (agreement with vLLM) and by machines
without vLLM's pooling runner; `score` runs it off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import torch

from engines.spec import PRMSpec, read_prm_spec
from engines.usage import Usage
from verifiers.prm import Candidate, Scores, prm_input_ids


def verdict_logits(logits: torch.Tensor, good_id: int, bad_id: int) -> torch.Tensor:
    """logit[good] - logit[bad] at every position: the PRM's log-odds that the solution still succeeds."""
    return logits[..., good_id] - logits[..., bad_id]


class TransformersPRM:
    def __init__(self, path: str | Path, spec: PRMSpec | None = None, batch_size: int = 64) -> None:
        """`spec`: the PRM's tokens; by default the one recorded beside its weights."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec = spec or read_prm_spec(path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
        self.step_tag_id = int(self.tokenizer.convert_tokens_to_ids(spec.step_tag))
        self.good_id = int(self.tokenizer.convert_tokens_to_ids(spec.good_token))
        self.bad_id = int(self.tokenizer.convert_tokens_to_ids(spec.bad_token))
        self.max_model_len = int(self.model.config.max_position_embeddings)
        self.batch_size = batch_size

    @property
    def is_healthy(self) -> bool:
        return True  # a forward pass in this process: no engine that could die

    async def probe(self) -> dict[str, bool]:
        return {}  # in-process: nothing to ask

    @torch.no_grad()
    def score_ids(self, sequences: Sequence[Sequence[int]]) -> list[list[float]]:
        results: list[list[float]] = []
        for start in range(0, len(sequences), self.batch_size):
            chunk = sequences[start : start + self.batch_size]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), int(self.tokenizer.pad_token_id), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, seq in enumerate(chunk):
                ids[row, : len(seq)] = torch.tensor(list(seq))
                mask[row, : len(seq)] = 1
            probs = torch.sigmoid(
                verdict_logits(
                    self.model(input_ids=ids, attention_mask=mask).logits, self.good_id, self.bad_id
                )
            )
            for row, seq in enumerate(chunk):
                tags = (torch.tensor(list(seq)) == self.step_tag_id).nonzero(as_tuple=True)[0]
                results.append(probs[row, tags].tolist())
        return results

    async def score(self, candidates: Sequence[Candidate], request_id: str) -> Scores:
        inputs = [prm_input_ids(c.prompt_ids, c.steps, self.step_tag_id) for c in candidates]
        scores = await asyncio.to_thread(self.score_ids, inputs)
        return Scores(scores, Usage(scored_tokens=sum(map(len, inputs)), verifier_calls=len(inputs)))

    async def abort(self, request_id: str) -> None:
        """Nothing to abort: a forward pass is not interruptible and finishes quickly."""
