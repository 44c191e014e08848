"""The HTTP surface: request/response models (pydantic v2, `extra="forbid"`) and the FastAPI app.

Ray-free. `create_app(cfg, chat=..., attribution=...)` builds the same routes that Serve runs (each
Serve deployment builds its app with this function), so the protocol is testable with `TestClient`.

Routes: `GET /` (the page), `GET /static/*`, `GET /healthz`, `GET /v1/models`, `GET /v1/models/{id}`,
`POST /v1/chat/completions` (OpenAI-compatible, SSE when `stream`), `POST /v1/attributions`,
`POST /v1/tokenize` (token count of a message against the window, for the page),
`GET /openapi.json` (the request schemas, for generated clients and fuzzers).

Chat messages: roles `system`, `user`, `assistant`. **System messages are ignored** (the dialogue
model has no place for an instruction); consecutive messages of one speaker are joined into one
utterance; the last non-system message must come from the user.

Every request is bounded: the body is read at most `max_body_bytes` (413), must be UTF-8 (400) JSON
(400) nested at most `MAX_JSON_DEPTH` deep without lone surrogates (400), unknown fields / wrong types
(strict: no "10" or true for an integer) / out-of-range values answer 422, texts that cannot fit the
model window answer 400, a replica holding `max_ongoing_requests + max_queued_requests` requests
answers 503 with `Retry-After`, and each call is cut after `request_timeout_s` (504). Errors are
OpenAI-shaped everywhere (405 with `Allow`): `{"error": {"message", "type", "param", "code"}}`.
A stream that fails after its first chunk ends with an `{"error": ...}` event and `data: [DONE]`.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from starlette.exceptions import HTTPException

from liaotian.serve.config import ServeConfig

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_STOP = 4
MAX_STOP_CHARS = 32
MAX_IG_STEPS = 256
MAX_JSON_DEPTH = 32  # the deepest request (a message's content part) is 5 levels
MAX_TOP_LOGPROBS = 20  # OpenAI's limit
IG_NESTED_RULES = ("adaptive_trapezoid", "clenshaw_curtis", "riemann_trapezoid")  # the rules steps="auto" can refine
IG_FIXED_STEPS = 50  # the steps of a fixed-step rule when the configured default is "auto" (captum's default)


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
    model_config = ConfigDict(extra="forbid", strict=True)  # "10" or true is not an integer


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


class ResponseFormat(Strict):
    type: str

    @field_validator("type")
    @classmethod
    def _text_only(cls, v):
        if v != "text":
            raise ValueError(f"only {{'type': 'text'}} is supported: this dialogue model cannot be constrained "
                             f"to {v[:32]!r} output")
        return v


class ChatCompletionRequest(Strict):
    model: Annotated[str, Field(max_length=128)] | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None  # the newer OpenAI name
    temperature: Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)] = 1.0  # 0 = greedy
    top_p: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 0.9
    # OpenAI's penalties on the reply so far: logits -= presence * [count > 0] + frequency * count
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0, allow_inf_nan=False)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0, allow_inf_nan=False)] = 0.0
    logprobs: bool = False  # the model's log-probabilities of the reply tokens (before any decoding rule)
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None  # needs logprobs
    response_format: ResponseFormat | None = None
    user: Annotated[str, Field(max_length=256)] | None = None  # accepted for OpenAI clients; not used
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
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
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


class TokenizeRequest(Strict):
    """`POST /v1/tokenize` (the page counts tokens as the user types): how many tokens a message is,
    and how many the window leaves for it with `max_tokens` reserved for the reply."""

    text: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None

    @field_validator("text")
    @classmethod
    def _text(cls, v, info: ValidationInfo):
        cap = _limit(info, "max_text_chars", ServeConfig.max_text_chars)
        if len(v) > cap:
            raise ValueError(f"text is {len(v)} characters long; the limit is {cap}")
        return v


class AttributionRequest(Strict):
    """`{"text"}` explains the classifier; `{"messages", "reply"}` explains a chatbot reply."""

    text: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    reply: str | None = None
    target: Annotated[int, Field(ge=0, le=1000)] | None = None  # class to explain; default: the predicted one
    # "auto": add quadrature nodes until every token score's estimated error is below 1 % of the largest score
    steps: Annotated[int, Field(ge=2, le=MAX_IG_STEPS)] | Literal["auto"] | None = None  # default: the explainer's
    baseline: Literal["pad", "zeros"] = "pad"
    # default: gausslegendre for a fixed number of steps, adaptive_trapezoid for "auto";
    # "auto" refines a nested rule (IG_NESTED_RULES); adaptive_trapezoid exists only with "auto"
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
        if self.steps == "auto" and self.method is not None and self.method not in IG_NESTED_RULES:
            raise ValueError(f"steps 'auto' refines a nested rule, one of {', '.join(IG_NESTED_RULES)}; "
                             f"{self.method} takes a fixed number of steps")
        if self.method == "adaptive_trapezoid" and isinstance(self.steps, int):
            raise ValueError("adaptive_trapezoid chooses its own nodes: use steps 'auto' (or omit steps)")
        return self

    def with_default_steps(self, default: int | str) -> "AttributionRequest":
        """`steps` filled in from the served default, so that it agrees with `method`: "auto" only for
        a nested rule, a fixed count (the default's, else IG_FIXED_STEPS) for the others."""
        if self.steps is not None:
            return self
        if self.method == "adaptive_trapezoid":
            steps = "auto"
        elif default == "auto" and self.method is not None and self.method not in IG_NESTED_RULES:
            steps = IG_FIXED_STEPS
        else:
            steps = default
        return self.model_copy(update={"steps": steps})

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


def _check_structure(data) -> str | None:
    """Why the parsed body is refused (nested deeper than MAX_JSON_DEPTH, a lone surrogate in a string
    or key, which cannot be encoded back to UTF-8), or None. Iterative: no recursion to exhaust."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return f"request body is nested deeper than {MAX_JSON_DEPTH} levels"
        if isinstance(value, dict):
            for k, v in value.items():
                stack.append((k, depth))
                stack.append((v, depth + 1))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                return f"request body holds a lone surrogate (\\u{ord(value[e.start]):04x}), which is not text"
    return None


async def read_json(request, cfg: ServeConfig) -> dict:
    """The body, capped at `max_body_bytes` while reading (Serve sets no limit), strictly UTF-8 JSON
    of bounded depth without lone surrogates."""
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
    except RecursionError:  # nested deeper than the parser's recursion allows
        raise _Reject(error_response(400, f"request body is nested deeper than {MAX_JSON_DEPTH} levels",
                                     code="bad_json")) from None
    if not isinstance(data, dict):
        raise _Reject(error_response(400, "request body must be a JSON object", code="bad_json"))
    problem = _check_structure(data)
    if problem:
        raise _Reject(error_response(400, problem, code="bad_json"))
    return data


def _parse(model_cls, data: dict, cfg: ServeConfig):
    try:
        return model_cls.model_validate(data, context={"cfg": cfg})
    except ValidationError as e:
        message, param = _validation_message(e)
        raise _Reject(error_response(422, message, param=param, code="invalid_value")) from None


def api_key(cfg: ServeConfig) -> str | None:
    return cfg.api_key or os.environ.get("LIAOTIAN_API_KEY") or None


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that always closes its body generator. Starlette only iterates it: when the
    client disconnects, the task is cancelled wherever it waits (often in `send`, with the generator
    suspended at a `yield`), and the generator, with whatever it holds, lives on until the garbage
    collector finds it. Here it is closed at once, shielded from the cancellation in progress."""

    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()


def _route_methods(app) -> dict[str, set[str]]:
    return {r.path: set(getattr(r, "methods", None) or ()) for r in app.routes}


def openapi_schema(app, title: str, bearer: bool) -> dict:
    """FastAPI's schema of the routes, with the request bodies the handlers read themselves
    (they parse the body with a cap on its size, so FastAPI does not see their models)."""
    from fastapi.openapi.utils import get_openapi
    from pydantic.json_schema import models_json_schema

    schema = get_openapi(title=title, version="1", routes=app.routes,
                         description="liaotian: an OpenAI-compatible chatbot and an attribution service")
    _, defs = models_json_schema([(ChatCompletionRequest, "validation"), (AttributionRequest, "validation"),
                                  (TokenizeRequest, "validation")], ref_template="#/components/schemas/{model}")
    schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
    bodies = {"/v1/chat/completions": "ChatCompletionRequest", "/v1/attributions": "AttributionRequest",
              "/v1/tokenize": "TokenizeRequest"}
    error = {"description": "an error", "content": {"application/json": {"schema": {
        "type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["message", "type"],
                                                                          "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                                                                         "param": {"type": ["string", "null"]},
                                                                                         "code": {"type": ["string", "null"]}}}}}}}}
    for path, model in bodies.items():
        op = schema.get("paths", {}).get(path, {}).get("post")
        if op is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model}"}}}}
            if bearer:
                op["security"] = [{"bearer": []}]
    if bearer:
        schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for ops in schema.get("paths", {}).values():
        for op in ops.values():
            op.setdefault("responses", {}).setdefault("default", error)
    return schema


ROUTE_NAMES = ("/", "/static", "/healthz", "/openapi.json", "/v1/models", "/v1/chat/completions", "/v1/attributions",
               "/v1/tokenize")


def route_label(path: str) -> str:
    """A bounded label for metrics: the route a path belongs to, else "other"."""
    if path.startswith("/static/"):
        return "/static"
    if path.startswith("/v1/models/"):
        return "/v1/models"
    return path if path in ROUTE_NAMES else "other"


def create_app(cfg: ServeConfig, chat: ChatBackend | None = None, attribution: AttributionBackend | None = None,
               page: bool = True, metrics=None):
    """The FastAPI app. Serve's chat application passes `chat` (and serves the page); the attribution
    application passes `attribution`; the in-process app used in tests may pass both. `metrics`: a
    `serve.metrics.ServeMetrics` (default: one that records in-process only)."""
    from liaotian.serve.metrics import ServeMetrics

    metrics = metrics or ServeMetrics(local_only=True)
    app = FastAPI(title="liaotian", docs_url=None, redoc_url=None, openapi_url=None)
    key = api_key(cfg)
    section = cfg.chat if chat is not None else cfg.attribution
    admit_limit = section.max_ongoing_requests + section.max_queued_requests
    in_flight = [0]
    admitted_paths = {"/v1/chat/completions", "/v1/attributions"}
    # which replica answered (a response header): lets a client or a test tell replicas apart
    replica = next((b.replica_id for b in (chat, attribution) if getattr(b, "replica_id", None)), None)
    replica_header = [(b"x-liaotian-replica", replica.encode())] if replica else []

    def plain_error(status: int, message: str, *, type_: str, code: str, headers: dict | None = None) -> JSONResponse:
        return error_response(status, message, type_=type_, code=code, headers=headers)

    class Guard:
        """Pure ASGI (a streamed body passes through untouched): the API key, admission (at most
        `max_ongoing_requests + max_queued_requests` requests in a replica, beyond: 503 + Retry-After),
        the request counter by route and status, and a JSON 500 for anything unforeseen."""

        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.inner(scope, receive, send)
            path, route = scope.get("path", ""), route_label(scope.get("path", ""))
            status = [0]

            async def send_recording(message):
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                    if replica_header:
                        message = dict(message, headers=list(message.get("headers") or []) + replica_header)
                await send(message)

            async def answer(response):
                await response(scope, receive, send_recording)

            try:
                if key and path.startswith("/v1/"):
                    given = dict(scope.get("headers") or []).get(b"authorization", b"")
                    if not hmac.compare_digest(given, f"Bearer {key}".encode()):
                        return await answer(plain_error(401, "missing or wrong API key (Authorization: Bearer ...)",
                                                        type_="authentication_error", code="invalid_api_key",
                                                        headers={"WWW-Authenticate": "Bearer"}))
                counted = scope.get("method") == "POST" and path in admitted_paths
                if counted and in_flight[0] >= admit_limit:
                    return await answer(plain_error(
                        503, f"overloaded: this replica already holds {admit_limit} requests; retry shortly",
                        type_="overloaded_error", code="overloaded", headers={"Retry-After": "1"}))
                if counted:
                    in_flight[0] += 1
                    metrics.in_flight(route, in_flight[0])
                try:
                    await self.inner(scope, receive, send_recording)
                finally:
                    if counted:
                        in_flight[0] -= 1
                        metrics.in_flight(route, in_flight[0])
            except Exception:  # noqa: BLE001 - a bug: answered in the API's error shape, and logged
                import logging

                logging.getLogger("liaotian.serve").exception("unhandled error on %s", path)
                if status[0] == 0:
                    await answer(plain_error(500, "internal error (logged on the server)", type_="server_error",
                                             code="internal_error"))
            finally:
                metrics.request(route, status[0] or 499)  # 499: the client left before an answer

    @app.exception_handler(_Reject)
    async def _rejected(request, exc: _Reject):
        return exc.response

    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return error_response(exc.status, exc.message, param=exc.param, code=exc.code)

    @app.exception_handler(HTTPException)
    async def _http_error(request, exc: HTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            return error_response(404, f"no route {request.method} {request.url.path}", code="not_found")
        if exc.status_code == 405:
            allowed = sorted(set().union(*(m for p, m in _route_methods(app).items()
                                            if _path_matches(p, request.url.path))) or {"GET"})
            headers["Allow"] = ", ".join(allowed)
            return error_response(405, f"method {request.method} not allowed on {request.url.path}; allowed: "
                                  f"{headers['Allow']}", code="bad_method", headers=headers)
        return error_response(exc.status_code, str(exc.detail), code="http_error", headers=headers or None)

    @app.get("/healthz")
    async def healthz():
        problems = [reason for backend in (chat, attribution) if backend is not None
                    for reason in [getattr(backend, "health", lambda: None)()] if reason]
        if problems:
            return error_response(503, "; ".join(problems), type_="server_error", code="unhealthy",
                                  headers={"Retry-After": "5"})
        return {"status": "ok"}

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi():
        if app.openapi_schema is None:
            app.openapi_schema = openapi_schema(app, "liaotian", bearer=bool(key))
        return JSONResponse(app.openapi_schema)

    async def timed(coro):
        try:
            return await asyncio.wait_for(coro, timeout=cfg.request_timeout_s)
        except asyncio.TimeoutError:
            raise _Reject(error_response(504, f"request took longer than {cfg.request_timeout_s} s",
                                         type_="timeout", code="timeout")) from None

    if page:
        static_files = {f.name: f for f in STATIC_DIR.iterdir() if f.is_file()}  # the only names served

        @app.get("/")
        async def index():
            return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")

        @app.get("/static/{name}")
        async def static(name: str):
            path = static_files.get(name)
            if path is None:
                return error_response(404, f"no static file {name[:64]!r}", code="not_found")
            return FileResponse(path)

    if chat is not None:
        def model_card():
            return {"id": chat.model_id, "object": "model", "created": 0, "owned_by": "liaotian",
                    "context_window": getattr(getattr(chat, "engine", None), "max_len", None)}

        @app.get("/v1/models")
        async def models():
            return {"object": "list", "data": [model_card()]}

        @app.get("/v1/models/{model_id}")
        async def model(model_id: str):
            if model_id != chat.model_id:
                return error_response(404, f"model {model_id[:128]!r} is not served; this server serves {chat.model_id!r}",
                                      param="model", code="model_not_found")
            return model_card()

        @app.post("/v1/tokenize")
        async def tokenize(request: Request):
            req = _parse(TokenizeRequest, await read_json(request, cfg), cfg)
            engine = chat.engine
            window = int(engine.max_len)
            reserve = min(req.max_tokens or cfg.max_new_tokens, cfg.max_new_tokens)
            return {"tokens": len(engine.tok.encode(req.text)) if req.text else 0, "context_window": window,
                    "max_tokens": reserve, "max_input_tokens": max(0, window - 2 - reserve)}

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request):
            started = time.monotonic()
            req = _parse(ChatCompletionRequest, await read_json(request, cfg), cfg)
            if req.model is not None and req.model != chat.model_id:
                return error_response(404, f"model {req.model!r} is not served; this server serves {chat.model_id!r}",
                                      param="model", code="model_not_found")
            prepared = chat.prepare(req)
            rid, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
            if req.stream:
                return ClosingStreamingResponse(_sse(chat, prepared, req, rid, created, cfg, metrics, started),
                                                media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
            result = await timed(chat.complete(prepared))
            completion = sum(c.completion_tokens for c in result.choices)
            metrics.tokens(result.prompt_tokens, completion)
            setting = decoding_setting(req)
            for c in result.choices:
                metrics.reply(setting, c.finish_reason, c.text, c.completion_tokens)
            return JSONResponse({
                "id": rid, "object": "chat.completion", "created": created, "model": chat.model_id,
                "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                             "finish_reason": c.finish_reason,
                             "logprobs": _logprobs(getattr(c, "logprobs", None), req) if req.logprobs else None}
                            for i, c in enumerate(result.choices)],
                "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": completion,
                          "total_tokens": result.prompt_tokens + completion},
            })

    if attribution is not None:
        default_steps = getattr(getattr(attribution, "explainer", None), "default_steps", cfg.ig_steps)

        @app.post("/v1/attributions")
        async def attributions(request: Request):
            req = _parse(AttributionRequest, await read_json(request, cfg), cfg).with_default_steps(default_steps)
            prepared = attribution.prepare(req)
            result = await timed(attribution.attribute(prepared))
            metrics.attribution(result.get("method", ""), float(result.get("delta", 0.0)), int(result.get("steps", 0)))
            return JSONResponse(result)

    app.add_middleware(_Wrap, guard=Guard)
    return app


class _Wrap:
    """`app.add_middleware` takes a class; this one wraps the app in the Guard built inside create_app."""

    def __init__(self, app, guard):
        self.guarded = guard(app)

    async def __call__(self, scope, receive, send):
        await self.guarded(scope, receive, send)


def _path_matches(template: str, path: str) -> bool:
    pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", re.escape(template).replace(r"\{", "{").replace(r"\}", "}")) + "$"
    return re.match(pattern, path) is not None


def decoding_setting(req: ChatCompletionRequest) -> str:
    """A bounded label for a request's decoding setting (metrics): greedy or sample, +rerank."""
    return ("greedy" if req.temperature == 0 else "sample") + ("+rerank" if req.rerank else "")


def _logprobs(token_logprobs, req: ChatCompletionRequest) -> dict | None:
    """OpenAI's `logprobs` object from [(token text, logprob, [(alt text, alt logprob), ...]), ...]."""
    if token_logprobs is None:
        return None
    k = req.top_logprobs or 0
    content = []
    for text, lp, alternatives in token_logprobs:
        content.append({"token": text, "logprob": lp, "bytes": list(text.encode("utf-8")),
                        "top_logprobs": [{"token": t, "logprob": a, "bytes": list(t.encode("utf-8"))}
                                         for t, a in alternatives[:k]]})
    return {"content": content}


def _error_event(exc: BaseException) -> str:
    if isinstance(exc, RequestError):
        error = {"message": exc.message, "type": "invalid_request_error", "param": exc.param, "code": exc.code}
    else:
        error = {"message": "the stream failed on the server (logged)", "type": "server_error", "param": None,
                 "code": "internal_error"}
    return f"data: {json.dumps({'error': error}, ensure_ascii=False)}\n\n"


async def _sse(chat: ChatBackend, prepared, req: ChatCompletionRequest, rid: str, created: int, cfg: ServeConfig,
               metrics, started: float):
    """OpenAI chunk format: a role chunk per choice, content deltas, a finish chunk, [usage], [DONE].
    The backend's stream is closed on every way out (end, client gone, error)."""
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
    texts: dict[int, list[str]] = {i: [] for i in range(req.n)}
    tokens_of: dict[int, int] = {i: 0 for i in range(req.n)}
    setting, last = decoding_setting(req), None
    try:
        async with contextlib.aclosing(chat.stream(prepared)) as deltas:
            async for d in deltas:
                now = time.monotonic()
                prompt_tokens = d.prompt_tokens
                completion += d.tokens
                tokens_of[d.index] += d.tokens
                if d.text:
                    metrics.token_timing(now - started if last is None else None, None if last is None else now - last)
                    last = now
                    texts[d.index].append(d.text)
                    delta = {"index": d.index, "delta": {"content": d.text}, "finish_reason": None}
                    if req.logprobs:
                        delta["logprobs"] = _logprobs(getattr(d, "logprobs", None), req)
                    yield chunk([delta])
                if d.finish_reason is not None:
                    open_choices.discard(d.index)
                    metrics.reply(setting, d.finish_reason, "".join(texts[d.index]), tokens_of[d.index])
                    yield chunk([{"index": d.index, "delta": {}, "finish_reason": d.finish_reason}])
                if now > deadline:
                    break  # the stream is cut; the open choices end with "length"
    except Exception as e:  # noqa: BLE001 - after the first chunk the status is sent: report in the stream
        import logging

        if not isinstance(e, RequestError):
            logging.getLogger("liaotian.serve").exception("stream %s failed", rid)
        yield _error_event(e)
        yield "data: [DONE]\n\n"
        return
    for i in sorted(open_choices):
        yield chunk([{"index": i, "delta": {}, "finish_reason": "length"}])
    metrics.tokens(prompt_tokens, completion)
    if req.stream_options is not None and req.stream_options.include_usage:
        yield chunk([], {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                         "total_tokens": prompt_tokens + completion})
    yield "data: [DONE]\n\n"
