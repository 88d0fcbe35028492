"""Request bodies (pydantic). OpenAI's schemas plus the steering extension fields.

Steering fields accepted at the top level of chat/completions bodies (the openai SDK sends them
through `extra_body`): `persona` (name), `strength` (weight of `persona`), `blend`
({persona: weight}), `traits` ({trait: weight}), `scale` (this request's steering scale instead
of the server's), `safety` (bool).
Unknown OpenAI fields are ignored, as OpenAI-compatible servers do. Types are strict (no
`true` for a number, no "1" for an integer): what /openapi.json says is what is accepted.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from fastapi import Path
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, \
    WithJsonSchema, field_validator, model_validator

from persona_steer.vector_format import NAME_RE

MAX_N = 16
MAX_TOP_LOGPROBS = 20
MAX_STOP = 16
SEED_MAX = 2 ** 53 - 1      # the largest integer every JSON client (a double) holds exactly

# Constraints shared by validation and /openapi.json. A pattern mismatch on a name is answered as
# `invalid_name` (server.errors); a weight's bound is steering.max_weight, enforced by
# persona_steer.steering_spec and written into the document by server.openapi ("x-bound").
VectorName = Annotated[str, StringConstraints(pattern=NAME_RE.pattern)]
NamePath = Annotated[str, Path(pattern=NAME_RE.pattern)]
# a monitored name: a vector name, optionally "trait:" / "persona:" to say its kind
MonitorName = Annotated[str, StringConstraints(
    pattern="^((trait|persona):)?" + NAME_RE.pattern.removeprefix("^"))]
Weight = Annotated[float, Field(allow_inf_nan=False, json_schema_extra={"x-bound": "weight"})]
NamedWeights = Annotated[dict[VectorName, Weight], WithJsonSchema({
    "type": "object", "description": "{name: weight}",
    "propertyNames": {"pattern": NAME_RE.pattern},
    "additionalProperties": {"type": "number", "x-bound": "weight"}})]
def _whole(v: Any) -> Any:
    """3.0 is an integer to JSON Schema (and so to clients generated from the document)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


WHOLE = BeforeValidator(_whole)     # last in an Annotated, after the constraints it keeps
Int = Annotated[int, WHOLE]         # strict otherwise: no true, no "3"
TokenId = Annotated[int, Field(ge=0, json_schema_extra={"x-bound": "token"}), WHOLE]
# with the prompt, at most the context (else 400 context_length_exceeded): a rule across fields
# and the model, so the document states it in words
MaxTokens = Annotated[int, Field(ge=1, description="with the prompt's tokens, at most the "
                                                     "context length"), WHOLE]
Seed = Annotated[int, Field(ge=-SEED_MAX, le=SEED_MAX), WHOLE]
TopLogprobs = Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS), WHOLE]


class SteeringFields(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    persona: Optional[Union[VectorName, Literal[""]]] = None
    strength: Optional[Weight] = None
    blend: Optional[NamedWeights] = None
    traits: Optional[NamedWeights] = None
    scale: Optional[Weight] = None      # None: the server's current steering scale
    safety: Optional[bool] = None
    # live monitoring: persona names, trait:NAME (or a bare trait name), assistant_axis;
    # None: the config's steering.monitor.default, [] none (docs/monitoring.md)
    monitor: Optional[list[MonitorName]] = None
    # which positions get the delta and capping (docs/steering.md); None: steering.steer_tokens.
    # last_turn: chats only (the last user message on); /v1/completions answers it with a 400
    steer_tokens: Optional[Literal["all", "generated", "prompt", "last_turn"]] = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)
    include_usage: bool = False


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)

    name: Optional[str] = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: Optional[bool] = None
    description: Optional[str] = None


class PlainFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["text", "json_object"]


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[Union[PlainFormat, JsonSchemaFormat], Field(discriminator="type")]


class SamplingFields(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: Optional[str] = None
    n: Int = Field(1, ge=1, le=MAX_N)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    max_tokens: Optional[MaxTokens] = None
    stop: Optional[Union[Annotated[str, Field(min_length=1)],
                         Annotated[list[Annotated[str, Field(min_length=1)]],
                                   Field(max_length=MAX_STOP)]]] = None
    seed: Optional[Seed] = None
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    logit_bias: Optional[Annotated[dict[str, float], WithJsonSchema({   # as OpenAI
        "type": "object", "description": "{token id: bias from -100 to 100}",
        "propertyNames": {"pattern": "^[0-9]+$"},
        "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}})]] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    # vLLM extensions (the openai SDK sends them through extra_body)
    top_k: Optional[Annotated[int, Field(ge=-1), WHOLE]] = None
    min_p: Optional[float] = Field(None, ge=0, le=1)
    # below 0.01 the logits overflow (vLLM divides positive logits by it)
    repetition_penalty: Optional[float] = Field(None, ge=0.01, le=2)
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


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

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
    max_completion_tokens: Optional[MaxTokens] = None
    logprobs: bool = False
    top_logprobs: Optional[TopLogprobs] = None
    response_format: Optional[ResponseFormat] = None
    chat_template_kwargs: Optional[dict[str, Any]] = None


def _without_last_turn(schema: dict) -> None:
    for option in schema.get("anyOf", [schema]):
        if "enum" in option:
            option["enum"] = [m for m in option["enum"] if m != "last_turn"]


class CompletionRequest(SamplingFields, SteeringFields):
    # a completion prompt has no turns: the document lists the modes it takes, and last_turn
    # asked for anyway is a 400 that says where it works (generation.completion_steer_tokens)
    steer_tokens: Optional[Literal["all", "generated", "prompt", "last_turn"]] = Field(
        None, json_schema_extra=_without_last_turn)
    prompt: Union[Annotated[str, Field(min_length=1)],
                  Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)],
                  Annotated[list[TokenId], Field(min_length=1)]]
    logprobs: Optional[TopLogprobs] = None
    echo: bool = Field(False, description="not supported: false only (true is a 400)",
                       json_schema_extra={"const": False})
    response_format: Optional[ResponseFormat] = None


# --- the original system's REST API --------------------------------------------------------
class SimpleChatRequest(SteeringFields):
    """POST /api/chat and WS /ws/chat: `message` (plus optional `history`) or `messages`.
    The original system's `personas` and `safety_enabled` are read as `blend` and `safety`."""
    # at least one message from some field (`to_messages`), as the document says
    model_config = ConfigDict(extra="ignore", strict=True, json_schema_extra={"anyOf": [
        {"required": ["message"], "properties": {"message": {"type": "string"}}},
        {"required": ["messages"], "properties": {"messages": {"minItems": 1}}},
        {"required": ["system"], "properties": {"system": {"type": "string", "minLength": 1}}},
        {"required": ["history"], "properties": {"history": {"minItems": 1}}}]})

    message: Optional[str] = None
    history: list[ChatMessage] = []
    messages: Optional[list[ChatMessage]] = None
    system: Optional[str] = None
    max_tokens: MaxTokens = 256
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    seed: Optional[Seed] = None
    presence_penalty: Optional[float] = Field(None, ge=-2, le=2)
    frequency_penalty: Optional[float] = Field(None, ge=-2, le=2)
    enable_thinking: Optional[bool] = None
    ignore_eos: bool = False
    # declared for the document; `_original_fields` moves them to blend / safety
    personas: Optional[NamedWeights] = Field(None, description="the original system's `blend`")
    safety_enabled: Optional[bool] = Field(None, description="the original system's `safety`")

    @model_validator(mode="before")
    @classmethod
    def _original_fields(cls, data: Any) -> Any:
        # the original system's /api/chat body: {"personas": {name: weight}, "safety_enabled"}
        # (`personas` joins `blend`, which wins on a name in both; `safety` wins over
        # `safety_enabled`), so every body the document allows is accepted. Values of another
        # type stay where they are, for the field's own check to refuse.
        if isinstance(data, dict) and ("personas" in data or "safety_enabled" in data):
            data = dict(data)
            personas, blend = data.get("personas"), data.get("blend")
            if isinstance(personas, dict) and (blend is None or isinstance(blend, dict)):
                data["blend"], data["personas"] = {**personas, **(blend or {})}, None
            if isinstance(data.get("safety_enabled"), bool) and data.get("safety") is None:
                data["safety"] = data["safety_enabled"]
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
    model_config = ConfigDict(strict=True)
    scale: Weight            # finite; within ±steering.max_weight (checked by the route)


class EqualizeRequest(BaseModel):
    """POST /api/vectors/equalize: by norm (rewrites the named vectors; `write: false` reports
    the factors only) or by tuned strength (reports which is stronger; `write: true` rescales
    the tuned ones)."""
    # by norm needs the names (by tuned, left out: every vector of the kind), as the document says
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"anyOf": [
        {"required": ["names"]},
        {"required": ["by"], "properties": {"by": {"const": "tuned"}}}]})
    names: Optional[list[VectorName]] = Field(
        None, min_length=2, max_length=256, json_schema_extra={"uniqueItems": True},
        description="two or more; by tuned, left out: every vector of the kind")
    kind: Literal["persona", "trait"] = "persona"
    by: Literal["norm", "tuned"] = "norm"
    write: Optional[bool] = Field(
        None, description="rewrite the vectors: by norm default true (false: the factors only), "
                          "by tuned default false (true: rescale the tuned ones to one strength)")


class TuneRequest(BaseModel):
    """POST /api/{personas,traits}/{name}/tune: each field left out comes from config tune.*."""
    model_config = ConfigDict(extra="forbid", strict=True)
    strengths: Optional[list[Annotated[float, Field(gt=0, allow_inf_nan=False)]]] = Field(
        None, min_length=1, max_length=32)
    num_questions: Optional[Annotated[int, Field(ge=1, le=200)]] = None
    scorer: Optional[Literal["auto", "judge", "marker"]] = None
    min_coherence: Optional[Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]] = None
    write: bool = Field(True, description="store the pick with the vector (false: measure only)")


class PersonaCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: VectorName
    description: Optional[str] = None
    archetype: Optional[VectorName] = None


class TraitCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    word: str = Field(..., min_length=1, max_length=64)
    opposite: str = Field(..., min_length=1, max_length=64)
    name: Optional[VectorName] = None
