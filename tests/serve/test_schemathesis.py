"""Property-based fuzzing of the served OpenAPI schema (schemathesis, in-process against the ASGI app,
no Ray): every generated request, fitting the schema or not, gets an answer below 500, and every error
is OpenAI-shaped JSON (a 405 names what is allowed). Bounded: `EXAMPLES` cases per operation and
mode (a few hundred in all)."""
from __future__ import annotations

import json

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402

from liaotian.serve.api import create_app  # noqa: E402
from liaotian.serve.config import ServeConfig  # noqa: E402
from liaotian.serve.engine import ChatEngine, Explainer, LocalBackend  # noqa: E402

EXAMPLES = 25


@pytest.fixture(scope="module")
def schema(tiny_models):
    cfg = ServeConfig(max_body_bytes=8192, max_text_chars=200, max_messages=8, max_new_tokens=8, max_n=4, ig_steps=16)
    backend = LocalBackend(cfg, ChatEngine(tiny_models["dialog"], tiny_models["mlm"]),
                           Explainer(tiny_models["classifier"], tiny_models["dialog"], default_steps=16))
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(cfg, chat=backend, attribution=backend))


def check(case) -> None:
    response = case.call()
    where = f"{case.method} {case.formatted_path} body={case.body!r:.300}"
    assert response.status_code < 500, (where, response.text[:300])
    if response.status_code >= 400:
        error = json.loads(response.text)["error"]
        assert isinstance(error["message"], str) and error["message"] and error["type"], where
        if response.status_code == 405:
            assert response.headers.get("allow"), where


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_5xx(schema, mode):
    operations = [result.ok() for result in schema.get_all_operations()]
    cases: dict[str, int] = {}
    for op in operations:
        key = f"{op.method.upper()} {op.path}"

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case):
            cases[key] = cases.get(key, 0) + 1
            check(case)

        try:
            run()
        except Unsatisfiable:  # negative mode: no input there that the schema forbids (a bare GET)
            assert mode == GenerationMode.NEGATIVE, key
    for key in ("POST /v1/chat/completions", "POST /v1/attributions"):
        assert cases.get(key, 0) >= EXAMPLES // 2, cases
