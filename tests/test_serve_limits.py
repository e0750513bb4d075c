"""Limits and access: API key, body / prompt / max_tokens caps, content type, out-of-range numbers."""

from __future__ import annotations

import copy
import inspect
import json
import threading
import time

import httpx2
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lofit.cli import serve
from lofit.serve.app import Limits
from serve_doubles import make_app, running_server

MODEL = "tiny"


def error_of(response: httpx2.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param, error
    return error


def test_api_key_is_required_on_every_path_when_set(tiny_backbone):
    with running_server(make_app(tiny_backbone, None, MODEL, api_key="s3cret")) as url:
        body = {"model": MODEL, "prompt": "x", "max_tokens": 1}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            refused = httpx2.post(url + "/completions", json=body, headers=headers)
            assert error_of(refused, 401)["type"] == "authentication_error"
            assert refused.headers["www-authenticate"] == "Bearer"
        assert httpx2.get(url + "/models").status_code == 401
        assert httpx2.get(url.removesuffix("/v1") + "/stats").status_code == 401
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
        served = openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0)
        assert served.completions.create(model=MODEL, prompt="x", max_tokens=1).usage.completion_tokens == 1


def test_body_content_type_prompt_and_max_tokens_caps(tiny_backbone):
    limits = Limits(max_body_bytes=2000, max_prompt_tokens=40, max_tokens=5)
    with running_server(make_app(tiny_backbone, None, MODEL, limits=limits)) as url:
        big = {"model": MODEL, "prompt": "x" * 3000}
        assert error_of(httpx2.post(url + "/completions", json=big), 413)["code"] == "request_too_large"

        def chunked():  # no content-length: the cap must hold while reading
            yield json.dumps(big).encode()

        chunked_response = httpx2.post(url + "/completions", content=chunked(), headers={"content-type": "application/json"})
        error_of(chunked_response, 413)
        small = json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 1})
        error_of(httpx2.post(url + "/completions", content=small, headers={"content-type": "text/plain"}), 415)
        error_of(httpx2.post(url + "/chat/completions", content=small), 415)
        long_prompt = {"model": MODEL, "prompt": "word " * 50, "max_tokens": 1}
        assert error_of(httpx2.post(url + "/completions", json=long_prompt), 400, "prompt")["code"] == "context_length_exceeded"
        error_of(httpx2.post(url + "/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 6}), 400, "max_tokens")
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        error_of(httpx2.post(url + "/chat/completions", json={**chat, "max_completion_tokens": 6}), 400, "max_completion_tokens")
        default_chat = httpx2.post(url + "/chat/completions", json=chat).json()
        assert default_chat["usage"]["completion_tokens"] <= 5
        ok = httpx2.post(url + "/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 5, "temperature": 0})
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 5


NUMERIC_FIELDS = ("max_tokens", "temperature", "top_p", "seed", "logprobs", "n")
ODD_NUMBERS = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([10**30, -(2**64), 2**64, -1, 0, float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 0.5]),
    st.floats(allow_nan=True, allow_infinity=True),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(NUMERIC_FIELDS), value=ODD_NUMBERS, chat=st.booleans())
def test_out_of_range_numbers_are_400_never_500(tiny_backbone, server_url, field, value, chat):
    body = {"model": MODEL, "max_tokens": 2, field: value}
    if chat:
        body["messages"] = [{"role": "user", "content": "hi"}]
        if field == "logprobs":
            body = {**body, "logprobs": True, "top_logprobs": value}
    else:
        body["prompt"] = "x"
    response = httpx2.post(server_url + ("/chat/completions" if chat else "/completions"), content=json.dumps(body),
                           headers={"content-type": "application/json"}, timeout=30)  # fmt: skip
    assert response.status_code in (200, 400), (body, response.text)
    if response.status_code == 400:
        assert response.json()["error"]["param"] is not None


@pytest.fixture(scope="module")
def server_url(tokenizer):
    from conftest import tiny_model

    from lofit.backbone import wrap_model

    backbone = wrap_model(tiny_model("llama", len(tokenizer)), tokenizer, name="tiny-llama")
    with running_server(make_app(backbone, None, MODEL, limits=Limits(max_tokens=4))) as url:
        yield url


class SlowTokenizer:
    """The real tokenizer, but encoding a long text takes a second (as a 5 MB prompt would)."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer

    def __getattr__(self, name: str):
        return getattr(self._tokenizer, name)

    def __call__(self, text, **kwargs):
        if len(text) > 1000:
            time.sleep(1.0)
        return self._tokenizer(text, **kwargs)


def test_tokenizing_a_long_prompt_does_not_block_other_requests(tiny_backbone):
    slow = copy.copy(tiny_backbone)
    slow.tokenizer = SlowTokenizer(tiny_backbone.tokenizer)
    with running_server(make_app(slow, None, MODEL)) as url:
        body = {"model": MODEL, "prompt": "hello " * 300, "max_tokens": 1}
        worker = threading.Thread(target=lambda: httpx2.post(url + "/completions", json=body, timeout=30))
        worker.start()
        time.sleep(0.2)  # the long prompt is being tokenized now
        started = time.monotonic()
        models = httpx2.get(url + "/models", timeout=30)
        waited = time.monotonic() - started
        assert worker.is_alive(), "the slow request should still be tokenizing"
        worker.join(timeout=30)
    assert models.status_code == 200 and waited < 0.5, waited


def test_serve_binds_loopback_by_default():
    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"


def test_an_unset_api_key_variable_is_one_line_before_the_model_loads(monkeypatch, capsys):
    from lofit.cli import main

    monkeypatch.delenv("LOFIT_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--api_key_env", "LOFIT_TEST_NO_SUCH_KEY", "--backbone.model", "/nonexistent/model"])
    assert exit_info.value.code == 2
    assert "api_key_env: environment variable LOFIT_TEST_NO_SUCH_KEY is not set" in capsys.readouterr().err
