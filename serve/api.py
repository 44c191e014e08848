"""The HTTP surface: request/response models (pydantic v2, `extra="forbid"`) and the FastAPI app.

Ray-free. `create_app(cfg, chat=..., attribution=...)` builds the same routes that Serve runs (each
Serve deployment builds its app with this function), so the protocol is testable with `TestClient`.

Routes: `GET /` (the page), `GET /static/*`, `GET /healthz`, `GET /v1/models`,
`POST /v1/chat/completions` (OpenAI-compatible, SSE when `stream`), `POST /v1/attributions`.

Chat messages: roles `system`, `user`, `assistant`. **System messages are ignored** (the dialogue
model has no place for an instruction); consecutive messages of one speaker are joined into one
utterance; the last non-system message must come from the user.

Every request is bounded: the body is read at most `max_body_bytes` (413), must be UTF-8 (400) JSON
(400), unknown fields / wrong types / out-of-range values answer 422, texts that cannot fit the model
window answer 400, and each call is cut after `request_timeout_s` (504). Errors are OpenAI-shaped:
`{"error": {"message", "type", "param", "code"}}`.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from liaotian.serve.config import ServeConfig

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_STOP = 4
MAX_STOP_CHARS = 32
MAX_IG_STEPS = 256


class RequestError(ValueError):
    """A request that is well-formed but cannot be served as asked (400)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


# ---------------------------------------------------------------------------------------------
# Request models. Limits that come from the config are read from the validation context.
# ---------------------------------------------------------------------------------------------

def _limit(info: ValidationInfo, name: str, default: int) -> int:
    cfg = (info.context or {}).get("cfg")
    return getattr(cfg, name, default) if cfg is not None else default


def _check_text(value: str, info: ValidationInfo, what: str) -> str:
    cap = _limit(info, "max_text_chars", ServeConfig.max_text_chars)
    if len(value) > cap:
        raise ValueError(f"{what} is {len(value)} characters long; the limit is {cap}")
    if not value.strip():
        raise ValueError(f"{what} must not be empty")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant"]
    content: str | Annotated[list[TextPart], Field(min_length=1, max_length=16)]
    name: Annotated[str, Field(max_length=64)] | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, v, info: ValidationInfo):
        text = v if isinstance(v, str) else "".join(p.text for p in v)
        return _check_text(text, info, "message content")


class RerankOptions(Strict):
    candidates: Annotated[int, Field(ge=2, le=16)] = 8  # sampled, then reranked by the MLM; best n returned
    alpha: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5  # weight of the MLM score against the LM score


class StreamOptions(Strict):
    include_usage: bool = False


class ChatCompletionRequest(Strict):
    model: Annotated[str, Field(max_length=128)] | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None  # the newer OpenAI name
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0  # 0 = greedy
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9
    top_k: Annotated[int, Field(ge=0, le=1000)] = 0  # extension; 0 = off
    n: Annotated[int, Field(ge=1)] = 1
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = None
    stop: Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)] | Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]], Field(max_length=MAX_STOP)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    rerank: bool | RerankOptions = False  # extension: sample candidates, rerank with the MLM

    @field_validator("messages")
    @classmethod
    def _messages(cls, v, info: ValidationInfo):
        cap = _limit(info, "max_messages", ServeConfig.max_messages)
        if len(v) > cap:
            raise ValueError(f"{len(v)} messages; the limit is {cap}")
        spoken = [m for m in v if m.role != "system"]
        if not spoken or spoken[-1].role != "user":
            raise ValueError("the last non-system message must have role 'user'")
        return v

    @field_validator("max_tokens", "max_completion_tokens")
    @classmethod
    def _max_tokens(cls, v, info: ValidationInfo):
        cap = _limit(info, "max_new_tokens", ServeConfig.max_new_tokens)
        if v is not None and v > cap:
            raise ValueError(f"must be at most {cap}")
        return v

    @field_validator("n")
    @classmethod
    def _n(cls, v, info: ValidationInfo):
        cap = _limit(info, "max_n", ServeConfig.max_n)
        if v > cap:
            raise ValueError(f"must be at most {cap}")
        return v

    @model_validator(mode="after")
    def _rerank_n(self):
        if isinstance(self.rerank, RerankOptions) and self.rerank.candidates < self.n:
            raise ValueError("rerank.candidates must be >= n")
        return self

    def utterances(self) -> list[str]:
        """The dialogue history as the model sees it: system dropped, same-speaker turns joined."""
        out: list[str] = []
        last_role = None
        for m in self.messages:
            if m.role == "system":
                continue
            if m.role == last_role:
                out[-1] = out[-1] + " " + m.content
            else:
                out.append(m.content)
            last_role = m.role
        return out

    def stop_list(self) -> list[str]:
        return [] if self.stop is None else [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def new_tokens(self, cfg: ServeConfig) -> int:
        return self.max_completion_tokens or self.max_tokens or cfg.max_new_tokens


class AttributionRequest(Strict):
    """`{"text"}` explains the classifier; `{"messages", "reply"}` explains a chatbot reply."""

    text: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    reply: str | None = None
    target: Annotated[int, Field(ge=0, le=1000)] | None = None  # class to explain; default: the predicted one
    # "auto": add quadrature nodes until every token score's estimated error is below 1 % of the largest score
    steps: Annotated[int, Field(ge=2, le=MAX_IG_STEPS)] | Literal["auto"] | None = None  # default: the explainer's
    baseline: Literal["pad", "zeros"] = "pad"
    # default: gausslegendre for a fixed number of steps, adaptive_trapezoid for "auto"
    method: Literal["gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle",
                    "adaptive_trapezoid", "clenshaw_curtis"] | None = None

    @field_validator("text", "reply")
    @classmethod
    def _text(cls, v, info: ValidationInfo):
        return None if v is None else _check_text(v, info, info.field_name)

    @field_validator("messages")
    @classmethod
    def _messages(cls, v, info: ValidationInfo):
        cap = _limit(info, "max_messages", ServeConfig.max_messages)
        if v is not None and len(v) > cap:
            raise ValueError(f"{len(v)} messages; the limit is {cap}")
        return v

    @model_validator(mode="after")
    def _one_kind(self):
        chat = self.messages is not None or self.reply is not None
        if (self.text is None) == (not chat):
            raise ValueError("give either 'text' (classifier) or 'messages' and 'reply' (chatbot)")
        if chat and (self.messages is None or self.reply is None):
            raise ValueError("a chatbot attribution needs both 'messages' and 'reply'")
        if chat and self.target is not None:
            raise ValueError("'target' applies to the classifier only")
        return self

    @property
    def kind(self) -> str:
        return "classifier" if self.text is not None else "chat"

    def utterances(self) -> list[str]:
        return ChatCompletionRequest.utterances(self)  # same mapping of roles as the chat


# ---------------------------------------------------------------------------------------------
# What the app needs from a backend (the engines in-process, or a Serve replica with batching)
# ---------------------------------------------------------------------------------------------

class ChatBackend(Protocol):
    model_id: str

    def prepare(self, req: ChatCompletionRequest) -> Any: ...  # cheap checks; raises RequestError
    async def complete(self, prepared: Any) -> Any: ...  # -> serve.engine.ChatResult
    def stream(self, prepared: Any): ...  # async iterator of serve.engine.StreamDelta


class AttributionBackend(Protocol):
    def prepare(self, req: AttributionRequest) -> Any: ...
    async def attribute(self, prepared: Any) -> dict: ...


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------

def error_response(status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict | None = None):
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TYPES = {"str", "int", "float", "bool", "list", "dict"}


def _validation_message(e: ValidationError) -> tuple[str, str | None]:
    parts, first = [], None
    for err in e.errors(include_url=False):
        loc = ".".join(str(x) for x in err["loc"] if isinstance(x, int) or (_FIELD.fullmatch(x) and x not in _TYPES))
        first = first or loc or None
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts[:8]), first


class _Reject(Exception):
    def __init__(self, response):
        self.response = response


async def read_json(request, cfg: ServeConfig) -> dict:
    """The body, capped at `max_body_bytes` while reading (Serve sets no limit), strictly UTF-8 JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > cfg.max_body_bytes):
        raise _Reject(error_response(413, f"request body larger than {cfg.max_body_bytes} bytes", code="body_too_large"))
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > cfg.max_body_bytes:
            raise _Reject(error_response(413, f"request body larger than {cfg.max_body_bytes} bytes", code="body_too_large"))
    try:
        text = bytes(buf).decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Reject(error_response(400, f"request body is not valid UTF-8 (byte {e.start})", code="bad_utf8")) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise _Reject(error_response(400, f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                                     code="bad_json")) from None
    if not isinstance(data, dict):
        raise _Reject(error_response(400, "request body must be a JSON object", code="bad_json"))
    return data


def _parse(model_cls, data: dict, cfg: ServeConfig):
    try:
        return model_cls.model_validate(data, context={"cfg": cfg})
    except ValidationError as e:
        message, param = _validation_message(e)
        raise _Reject(error_response(422, message, param=param, code="invalid_value")) from None


def api_key(cfg: ServeConfig) -> str | None:
    return cfg.api_key or os.environ.get("LIAOTIAN_API_KEY") or None


def create_app(cfg: ServeConfig, chat: ChatBackend | None = None, attribution: AttributionBackend | None = None,
               page: bool = True):
    """The FastAPI app. Serve's chat application passes `chat` (and serves the page); the attribution
    application passes `attribution`; the in-process app used in tests may pass both."""
    app = FastAPI(title="liaotian", docs_url=None, redoc_url=None, openapi_url=None)
    key = api_key(cfg)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                return error_response(401, "missing or wrong API key (Authorization: Bearer ...)",
                                      type_="authentication_error", code="invalid_api_key",
                                      headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    @app.exception_handler(_Reject)
    async def _rejected(request, exc: _Reject):
        return exc.response

    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return error_response(exc.status, exc.message, param=exc.param, code=exc.code)

    @app.exception_handler(404)
    async def _not_found(request, exc):
        return error_response(404, f"no route {request.method} {request.url.path}", code="not_found")

    @app.exception_handler(405)
    async def _bad_method(request, exc):
        return error_response(405, f"method {request.method} not allowed on {request.url.path}", code="bad_method")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    async def timed(coro):
        try:
            return await asyncio.wait_for(coro, timeout=cfg.request_timeout_s)
        except asyncio.TimeoutError:
            raise _Reject(error_response(504, f"request took longer than {cfg.request_timeout_s} s",
                                         type_="timeout", code="timeout")) from None

    if page:
        @app.get("/")
        async def index():
            return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")

        @app.get("/static/{name}")
        async def static(name: str):
            path = (STATIC_DIR / name).resolve()
            if path.parent != STATIC_DIR or not path.is_file():
                return error_response(404, f"no static file {name!r}", code="not_found")
            return FileResponse(path)

    if chat is not None:
        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [{"id": chat.model_id, "object": "model", "created": 0,
                                                 "owned_by": "liaotian"}]}

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request):
            req = _parse(ChatCompletionRequest, await read_json(request, cfg), cfg)
            if req.model is not None and req.model != chat.model_id:
                return error_response(404, f"model {req.model!r} is not served; this server serves {chat.model_id!r}",
                                      param="model", code="model_not_found")
            prepared = chat.prepare(req)
            rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
            if req.stream:
                return StreamingResponse(_sse(chat, prepared, req, rid, created, cfg),
                                         media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
            result = await timed(chat.complete(prepared))
            completion = sum(c.completion_tokens for c in result.choices)
            return JSONResponse({
                "id": rid, "object": "chat.completion", "created": created, "model": chat.model_id,
                "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                             "finish_reason": c.finish_reason, "logprobs": None} for i, c in enumerate(result.choices)],
                "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": completion,
                          "total_tokens": result.prompt_tokens + completion},
            })

    if attribution is not None:
        @app.post("/v1/attributions")
        async def attributions(request: Request):
            req = _parse(AttributionRequest, await read_json(request, cfg), cfg)
            prepared = attribution.prepare(req)
            return JSONResponse(await timed(attribution.attribute(prepared)))

    return app


async def _sse(chat: ChatBackend, prepared, req: ChatCompletionRequest, rid: str, created: int, cfg: ServeConfig):
    """OpenAI chunk format: a role chunk per choice, content deltas, a finish chunk, [usage], [DONE]."""
    def chunk(choices, usage=None):
        body = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": chat.model_id,
                "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
                 for i in range(req.n)])
    deadline = time.monotonic() + cfg.request_timeout_s
    completion, prompt_tokens, open_choices = 0, 0, set(range(req.n))
    async for d in chat.stream(prepared):
        prompt_tokens = d.prompt_tokens
        completion += d.tokens
        if d.text:
            yield chunk([{"index": d.index, "delta": {"content": d.text}, "finish_reason": None}])
        if d.finish_reason is not None:
            open_choices.discard(d.index)
            yield chunk([{"index": d.index, "delta": {}, "finish_reason": d.finish_reason}])
        if time.monotonic() > deadline:
            break  # the stream is cut; the open choices end with "length"
    for i in sorted(open_choices):
        yield chunk([{"index": i, "delta": {}, "finish_reason": "length"}])
    if req.stream_options is not None and req.stream_options.include_usage:
        yield chunk([], {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                         "total_tokens": prompt_tokens + completion})
    yield "data: [DONE]\n\n"
