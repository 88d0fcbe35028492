"""Request bodies (pydantic). OpenAI's schemas plus the steering extension fields.

Steering fields accepted at the top level of chat/completions bodies (the openai SDK sends them
through `extra_body`): `persona` (name), `strength` (weight of `persona`), `blend`
({persona: weight}), `traits` ({trait: weight}), `scale` (this request's steering scale instead
of the server's), `safety` (bool).
Unknown OpenAI fields are ignored, as OpenAI-compatible servers do.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_N = 16
MAX_TOP_LOGPROBS = 20


class SteeringFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    persona: Optional[str] = None
    strength: Optional[float] = None
    blend: Optional[dict[str, float]] = None
    traits: Optional[dict[str, float]] = None
    scale: Optional[float] = None       # None: the server's current steering scale
    safety: Optional[bool] = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[dict[str, Any]] = None


class SamplingFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Optional[str] = None
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = None
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    logit_bias: Optional[dict[str, float]] = None       # {token id: -100..100}, as OpenAI
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    # vLLM extensions (the openai SDK sends them through extra_body)
    top_k: Optional[int] = Field(None, ge=-1)
    min_p: Optional[float] = Field(None, ge=0, le=1)
    repetition_penalty: Optional[float] = Field(None, gt=0, le=2)
    return_token_ids: bool = False
    skip_special_tokens: Optional[bool] = None
    ignore_eos: bool = False

    @field_validator("logit_bias")
    @classmethod
    def _logit_bias(cls, v):
        for token, bias in (v or {}).items():
            if not token.isdigit():
                raise ValueError(f"keys are token ids (whole numbers >= 0), got {token!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"bias for token {token} must be between -100 and 100, got {bias}")
        return v

    @field_validator("stop")
    @classmethod
    def _stop(cls, v):
        if isinstance(v, list):
            if len(v) > 16:
                raise ValueError("at most 16 stop strings")
            if any(not isinstance(s, str) or s == "" for s in v):
                raise ValueError("stop strings must be non-empty")
        elif v == "":
            raise ValueError("stop must be non-empty")
        return v


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None
    name: Optional[str] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatCompletionRequest(SamplingFields, SteeringFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: Optional[ResponseFormat] = None
    chat_template_kwargs: Optional[dict[str, Any]] = None


class CompletionRequest(SamplingFields, SteeringFields):
    prompt: Union[str, list[str], list[int]]
    logprobs: Optional[int] = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False
    response_format: Optional[ResponseFormat] = None

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v):
        if isinstance(v, list) and len(v) == 0:
            raise ValueError("prompt must not be empty")
        return v


# --- the original system's REST API --------------------------------------------------------
class SimpleChatRequest(SteeringFields):
    """POST /api/chat and WS /ws/chat: `message` (plus optional `history`) or `messages`.
    The original system's `personas` and `safety_enabled` are read as `blend` and `safety`."""
    model_config = ConfigDict(extra="ignore")

    message: Optional[str] = None
    history: list[ChatMessage] = []
    messages: Optional[list[ChatMessage]] = None
    system: Optional[str] = None
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    seed: Optional[int] = None
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    enable_thinking: Optional[bool] = None
    ignore_eos: bool = False

    @model_validator(mode="before")
    @classmethod
    def _original_fields(cls, data: Any) -> Any:
        # the original system's /api/chat body: {"personas": {name: weight}, "safety_enabled"}
        if isinstance(data, dict) and ("personas" in data or "safety_enabled" in data):
            data = dict(data)
            if "personas" in data:
                if data.get("blend") is not None:
                    raise ValueError("give `blend` or `personas` (the same thing), not both")
                data["blend"] = data.pop("personas")
            if "safety_enabled" in data and data.get("safety") is None:
                data["safety"] = data.pop("safety_enabled")
        return data

    def to_messages(self) -> list[ChatMessage]:
        if self.messages:
            return list(self.messages)
        msgs = []
        if self.system:
            msgs.append(ChatMessage(role="system", content=self.system))
        msgs.extend(self.history)
        if self.message is not None:
            msgs.append(ChatMessage(role="user", content=self.message))
        if not msgs:
            from server.errors import APIError
            raise APIError(400, "give `message` or `messages`", param="message")
        return msgs


class ScaleRequest(BaseModel):
    scale: float

    @field_validator("scale")
    @classmethod
    def _finite(cls, v: float) -> float:
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return v


class EqualizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    names: list[str] = Field(min_length=2, max_length=256)
    kind: Literal["persona", "trait"] = "persona"


class PersonaCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: Optional[str] = None
    archetype: Optional[str] = None


class TraitCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    word: str = Field(..., min_length=1, max_length=64)
    opposite: str = Field(..., min_length=1, max_length=64)
    name: Optional[str] = None
