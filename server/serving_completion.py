"""`POST /v1/completions`: what a completion request adds to `SearchServing`.

Contract: the prompt is one text or a list of them (none blank), each encoded once and searched `n`
times; choices run prompt by prompt. A choice is the completion text. A stream sends nothing before the
search has progress to report, then each choice in one chunk: its text, finish reason and search report.
"""

from __future__ import annotations

from pydantic import BaseModel

from server.answers import Answer, reports, usage
from server.errors import ApiError
from server.protocol import (
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
    StreamChunk,
)
from server.serving import Prompt, SearchServing


class ServingCompletion(SearchServing[CompletionRequest]):
    kind = "completion"
    prompt_param = "prompt"
    id_prefix = "cmpl"
    chunk_object = "text_completion"

    def prompts(self, body: CompletionRequest) -> list[Prompt]:
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if any(not t.strip() for t in texts):
            raise ApiError(400, "prompt must not be empty", param="prompt")
        return [Prompt(tuple(self.controller.policy.encode(t)), t) for t in texts]

    def response(self, body: CompletionRequest, answers: list[Answer]) -> CompletionResponse:
        choices = [
            CompletionChoice(index=i, text=a.text, finish_reason=a.finish_reason)
            for i, a in enumerate(answers)
        ]
        return CompletionResponse(
            model=body.model,
            choices=choices,
            usage=usage(answers, self.controller.weights),
            search=reports(answers),
        )

    def first_chunks(self, head: StreamChunk, choices: int) -> list[BaseModel]:
        return []  # a completion has no role to announce

    def answer_chunks(self, head: StreamChunk, index: int, answer: Answer) -> list[BaseModel]:
        choice = CompletionChoice(index=index, text=answer.text, finish_reason=answer.finish_reason)
        return [CompletionChunk(**head.model_dump(), choices=[choice], search=answer.report)]
