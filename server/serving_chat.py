"""`POST /v1/chat/completions`: what a chat request adds to `SearchServing`.

Contract: the chat template is rendered once over the messages; the last user message (which must not
be blank) is the text task detection and grading read. A choice is an assistant message. A stream opens
with the assistant's role on every choice at once, then sends each choice's content in one chunk and
its finish reason, with its search report, in the next.
"""

from __future__ import annotations

from pydantic import BaseModel

from server.answers import Answer, reports, usage
from server.errors import ApiError
from server.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionLastChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatMessageOut,
    StreamChunk,
)
from server.serving import Prompt, SearchServing


class ServingChat(SearchServing[ChatCompletionRequest]):
    kind = "chat"
    prompt_param = "messages"
    id_prefix = "chatcmpl"
    chunk_object = "chat.completion.chunk"

    def prompts(self, body: ChatCompletionRequest) -> list[Prompt]:
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        users = [m["content"] for m in messages if m["role"] == "user"]
        if not users or not users[-1].strip():
            raise ApiError(400, "messages must include a non-empty user message", param="messages")
        return [Prompt(tuple(self.controller.policy.render_chat(messages)), users[-1])]

    def response(self, body: ChatCompletionRequest, answers: list[Answer]) -> ChatCompletionResponse:
        choices = [
            ChatChoice(index=i, message=ChatMessageOut(content=a.text), finish_reason=a.finish_reason)
            for i, a in enumerate(answers)
        ]
        return ChatCompletionResponse(
            model=body.model,
            choices=choices,
            usage=usage(answers, self.controller.weights),
            search=reports(answers),
        )

    def first_chunks(self, head: StreamChunk, choices: int) -> list[BaseModel]:
        opening = [
            ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content="")) for i in range(choices)
        ]
        return [ChatCompletionChunk(**head.model_dump(), choices=opening)]

    def answer_chunks(self, head: StreamChunk, index: int, answer: Answer) -> list[BaseModel]:
        content = ChatChunkChoice(index=index, delta=ChatDelta(content=answer.text))
        finish = ChatChunkChoice(index=index, delta=ChatDelta(), finish_reason=answer.finish_reason)
        return [
            ChatCompletionChunk(**head.model_dump(), choices=[content]),
            ChatCompletionLastChunk(**head.model_dump(), choices=[finish], search=answer.report),
        ]
