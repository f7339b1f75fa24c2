"""The HTTP protocol: OpenAI's request and response shapes, plus Ponder's `search` object.

Contract: pydantic models validate every request body (wrong types, out-of-range values and unknown
`search` fields are refused; unknown OpenAI fields are ignored, as OpenAI's own server does). The
`search` object is what clients send through `extra_body`; the response carries a `search` object
with what the search did (its budget and the compute units it spent, and the weights that price
them). Usage counts every token the search spent, by kind, and what they cost in compute units. A
stream is made of the chunk models below (serialised with `model_dump_json`): the chat chunk with its
delta, the completion chunk, Ponder's progress chunk (no choices, a `ponder` event) and the usage
chunk.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
)

from verifiers.aggregate import Aggregation

FinishReason = Literal["stop", "length"]


class SearchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: str | None = Field(
        default=None, description="greedy, best_of_n, beam, dvts, mcts, particle_filter, revision or auto"
    )
    budget: int | None = Field(
        default=None,
        ge=1,
        description="compute units the search may spend: generated-token equivalents, each kind of token "
        "(generated, prefilled, prefix-cache hit, PRM-scored, PRM cache hit) at its weight",
    )
    knobs: dict[str, Any] = Field(default_factory=dict, description="the strategy's explicit settings")
    aggregation: Aggregation = "last"
    timeout_s: float | None = Field(default=None, gt=0)
    max_verifier_calls: int | None = Field(default=None, ge=1)
    reference: str | None = Field(
        default=None, description="the reference answer: the outcome is graded and counted"
    )
    return_candidates: bool = False
    return_tree: bool = False


class StreamOptions(BaseModel):
    include_usage: bool = False


# OpenAI fields a search cannot honour: a request that sets one is refused (400, naming it), not served as
# if it had not asked. Unknown fields are refused too (`extra="forbid"`).
UNSUPPORTED = {
    "logprobs": "the chosen answer's log-probabilities are not returned (a search scores whole steps)",
    "top_logprobs": "the chosen answer's log-probabilities are not returned (a search scores whole steps)",
    "tools": "tool calls are not searched over",
    "tool_choice": "tool calls are not searched over",
    "functions": "function calls are not searched over",
    "function_call": "function calls are not searched over",
    "parallel_tool_calls": "tool calls are not searched over",
    "response_format": "structured output is not enforced on the candidates",
    "logit_bias": "logit biases are not applied to the policy's samples",
    "presence_penalty": "penalties are not applied to the policy's samples",
    "frequency_penalty": "penalties are not applied to the policy's samples",
    "echo": "the prompt is not echoed",
    "best_of": "use search.strategy best_of_n with a budget instead",
    "suffix": "insertion (a suffix after the completion) is not searched",
}


class SamplingFields(BaseModel):
    """OpenAI's sampling fields shared by both endpoints."""

    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)  # the search recipe's, not OpenAI's 1.0
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    search: SearchOptions | None = None
    logprobs: bool | int | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    logit_bias: dict[str, float] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None

    @field_validator(*UNSUPPORTED)
    @classmethod
    def honoured(cls, value: Any, info: ValidationInfo) -> Any:
        """Unset, or set to what changes nothing (false, 0, a text response format), or refused."""
        if value in (None, False, 0) or value == {"type": "text"} or value == [] or value == "none":
            return value
        raise ValueError(f"not supported: {UNSUPPORTED[str(info.field_name)]}")

    @field_validator("stop")
    @classmethod
    def at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def token_limit(self) -> int | None:
        return self.max_tokens


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingFields):
    prompt: str | list[str] = Field(min_length=1)


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)
    completion_tokens_details: CompletionTokensDetails = Field(default_factory=CompletionTokensDetails)
    scored_tokens: int = 0  # Ponder: tokens the PRM read
    cached_scored_tokens: int = 0  # Ponder: of which it served from its prefix cache
    compute_units: float = 0.0  # Ponder: what all of the above cost, in generated-token equivalents


class SearchReport(BaseModel):
    strategy: str
    stop_reason: str
    budget: int  # compute units
    compute_units: float  # what this search spent of it
    cost_weights: dict[str, Any]  # each kind of token's weight in units, and where they were measured
    candidates: int
    score: float | None = None
    knobs: dict[str, Any] = Field(default_factory=dict)
    correct: bool | None = None  # against `search.reference`, when given
    candidate_texts: list[dict[str, Any]] | None = None
    tree: dict[str, Any] | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: FinishReason
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo
    search: SearchReport | list[SearchReport]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"cmpl-{uuid.uuid4().hex}")
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo
    search: SearchReport | list[SearchReport]


# --- streaming chunks ------------------------------------------------------------------------------
class StreamChunk(BaseModel):
    """What every chunk of one stream carries: the stream's id, object, creation time and model."""

    id: str
    object: Literal["chat.completion.chunk", "text_completion"]
    created: int
    model: str


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def only_what_is_new(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # OpenAI's deltas leave out what a chunk does not change (the last delta is {}), not null it.
        return {key: value for key, value in handler(self).items() if value is not None}


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(StreamChunk):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]


class ChatCompletionLastChunk(ChatCompletionChunk):
    """A choice's last chunk: its finish reason, and what its search did."""

    search: SearchReport


class CompletionChunk(StreamChunk):
    """A completion choice streams as one chunk: its text, finish reason and search report."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    search: SearchReport


class ProgressChunk(StreamChunk):
    """Search progress: no choices (the official client accepts such chunks), Ponder's event instead."""

    choices: tuple[()] = ()
    ponder: dict[str, Any]  # {"event": name, **details}


class UsageChunk(StreamChunk):
    """The last chunk before [DONE] when `stream_options.include_usage` asks for it."""

    choices: tuple[()] = ()
    usage: UsageInfo


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "ponder"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
