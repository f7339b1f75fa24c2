"""`StepVerifier` on remote vLLM pooling servers (`POST /pooling`), for scaling out.

Contract: `RemotePRM.connect(urls, model, spec)` renders inputs in the PRM's format (`verifiers.prm_format`)
with the local PRM directory's tokenizer and scores candidates on the replicas at `urls`, started with
`engines.vllm_serve.serve_command(config, "prm")` (the pooling runner with the same classifier and STEP
pooler settings as `VLLMPRM`, prefix caching off). One score call is one pooling request whose `input`
holds every candidate's rendered token ids; the server submits them to its engine at once, as
`VLLMPRM` does in-process, and each comes back as its [step tags x values] matrix, whose `good_column` is
P(good); a row count that differs from the candidate's steps is an error. Scores and usage equal
`VLLMPRM.score`'s. Replica choice and fail-over are `engines.replicas`'; `abort(request_id)`
cancels that search's pooling calls (the server aborts a request whose client disconnects).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from engines.base import validate_prefixes
from engines.remote import model_max_len
from engines.remote_http import RemoteClient
from engines.spec import PRMSpec
from engines.usage import Usage
from engines.vllm_engine import load_tokenizer
from verifiers.prm import Candidate, Scores
from verifiers.prm_format import PRMFormat, PRMInputError, prm_format, tag_positions

log = logging.getLogger("ponder.prm")


class RemotePRM:
    def __init__(self, client: RemoteClient, format: PRMFormat, max_model_len: int, vocab_size: int) -> None:
        self.remote = client
        self.format = format
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size

    @classmethod
    def connect(
        cls,
        urls: Sequence[str],
        model: str | Path,
        spec: PRMSpec,
        max_model_len: int | None = None,
        cool_off_s: float = 10.0,
    ) -> RemotePRM:
        """`model`: the local copy of the served PRM (its tokenizer, vocabulary and, unless given, context);
        `spec`: its input format and tokens."""
        log.info("remote PRM on %s", ", ".join(urls))
        format = prm_format(spec, load_tokenizer(model))
        # The vocabulary the server checks ids against is the model's (as VLLMPRM's get_vocab_size).
        vocab_size = int(json.loads((Path(model) / "config.json").read_text())["vocab_size"])
        return cls(
            RemoteClient(urls, cool_off_s),
            format,
            max_model_len if max_model_len is not None else model_max_len(model),
            vocab_size,
        )

    @property
    def is_healthy(self) -> bool:
        return self.remote.healthy

    async def probe(self) -> dict[str, bool]:
        return await self.remote.probe()

    async def aclose(self) -> None:
        await self.remote.aclose()

    def scored_length(self, candidate: Candidate) -> int:
        return len(self.format.render(candidate))

    async def score(self, candidates: Sequence[Candidate], request_id: str) -> Scores:
        inputs = [self.format.render(c) for c in candidates]
        for ids, candidate in zip(inputs, candidates, strict=True):
            tag_positions(self.format, ids, len(candidate.steps))  # one tag per step, or an error
        # A pooled prompt may fill the whole context: nothing is generated after it.
        validate_prefixes(inputs, self.max_model_len + 1, self.vocab_size)
        if not inputs:
            return Scores([], Usage())
        body = {"input": inputs, "task": "token_classify", "encoding_format": "float"}
        call = self.remote.track(request_id, self.remote.post(request_id, "/pooling", body))
        try:
            reply = await call
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this caller was cancelled
            raise RuntimeError("the PRM call was aborted") from None  # abort(request_id) elsewhere
        rows = sorted(reply["data"], key=lambda item: item["index"])
        if len(rows) != len(inputs):
            raise RuntimeError(f"the PRM server returned {len(rows)} results for {len(inputs)} inputs")
        column = self.format.good_column  # each tag's row holds one value (P(good)) or one per class
        scores = [[float(row[column]) for row in item["data"]] for item in rows]
        for row, candidate in zip(scores, candidates, strict=True):
            if len(row) != len(candidate.steps):
                raise PRMInputError(
                    f"the PRM server scored {len(row)} step tags of {len(candidate.steps)} steps"
                )
        usage = Usage(scored_tokens=sum(len(ids) for ids in inputs), verifier_calls=len(inputs))
        return Scores(scores, usage)

    async def abort(self, request_id: str) -> None:
        tasks = self.remote.cancel(request_id)
        await asyncio.gather(*tasks, return_exceptions=True)
