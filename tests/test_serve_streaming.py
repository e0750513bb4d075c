"""Streaming (OpenAI's server-sent events, read by the `openai` client) and disconnect handling."""

from __future__ import annotations

import threading
import time

import httpx2
import openai

from serve_doubles import PacedEngine, make_app, running_server

MODEL = "tiny"
PROMPT = "Q: What is the capital of France?\nA:"


def client(base_url: str, timeout: float = 30) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=timeout)


def test_streamed_completion_equals_the_plain_one(tiny_backbone):
    with running_server(make_app(tiny_backbone, None, MODEL)) as url:
        api = client(url)
        plain = api.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, temperature=0, logprobs=2)
        chunks = list(
            api.completions.create(
                model=MODEL, prompt=PROMPT, max_tokens=10, temperature=0, logprobs=2, stream=True,
                stream_options={"include_usage": True},
            )
        )  # fmt: skip
        raw = httpx2.post(url + "/completions", json={"model": MODEL, "prompt": PROMPT, "max_tokens": 3, "stream": True})
    choices = [c.choices[0] for c in chunks if c.choices]
    assert len(choices) > 2
    assert "".join(c.text for c in choices) == plain.choices[0].text
    assert [c.finish_reason for c in choices][-1] == plain.choices[0].finish_reason == "length"
    tokens = [t for c in choices if c.logprobs for t in c.logprobs.tokens]
    assert tokens == plain.choices[0].logprobs.tokens
    streamed_logprobs = [v for c in choices if c.logprobs for v in c.logprobs.token_logprobs]
    assert streamed_logprobs == plain.choices[0].logprobs.token_logprobs
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens == 10
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = raw.text.split("\n\n")
    assert events[-2] == "data: [DONE]" and events[-1] == ""
    assert all(event.startswith("data: {") for event in events[:-2])


def test_streamed_chat_with_a_stop_string(tiny_backbone):
    messages = [{"role": "user", "content": "hi"}]
    with running_server(make_app(tiny_backbone, None, MODEL)) as url:
        api = client(url)
        plain = api.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
        text = plain.choices[0].message.content
        stop = text[5:8]
        stopped = api.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0, stop=stop)
        chunks = list(
            api.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0, stop=stop, stream=True)
        )
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed == stopped.choices[0].message.content == text[: text.index(stop)]
    assert stop not in streamed
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def wait_until(condition, timeout: float) -> float:
    """Seconds until `condition()` held (fails after `timeout`)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "condition not reached in time"
        time.sleep(0.002)
    return time.monotonic() - start


def test_a_disconnected_client_frees_its_row_within_a_step_and_the_next_request_is_served(tiny_backbone):
    step_s = 0.05  # 400 tokens would hold the batch for 20 s
    app = make_app(tiny_backbone, None, MODEL, engine_type=PacedEngine, engine_options={"step_s": step_s}, max_batch=1)
    engine = app.state.engine
    with running_server(app) as url:
        api = client(url)
        stream = api.completions.create(model=MODEL, prompt=PROMPT, max_tokens=400, temperature=0, stream=True)
        for _, _chunk in zip(range(3), stream):
            pass
        assert engine.active_rows == 1
        stream.close()
        freed = wait_until(lambda: engine.active_rows == 0, timeout=5)
        started = time.monotonic()
        reply = api.completions.create(model=MODEL, prompt=PROMPT, max_tokens=2, temperature=0)
        next_wait = time.monotonic() - started

        # a non-streamed request whose client gives up is cancelled too
        gave_up = threading.Thread(
            target=lambda: _ignore_timeout(client(url, timeout=0.3), max_tokens=400), daemon=True
        )
        gave_up.start()
        wait_until(lambda: engine.active_rows == 1, timeout=5)
        gave_up.join(timeout=5)
        freed_plain = wait_until(lambda: engine.active_rows == 0, timeout=5)
    assert reply.usage.completion_tokens == 2
    # generous bounds for a loaded 2-core machine; holding on would take 400 steps = 20 s
    assert freed < 0.5 + 3 * step_s, freed
    assert next_wait < 1.0 + 4 * step_s, next_wait
    assert freed_plain < 0.5 + 3 * step_s, freed_plain


def _ignore_timeout(api: openai.OpenAI, max_tokens: int) -> None:
    try:
        api.completions.create(model=MODEL, prompt=PROMPT, max_tokens=max_tokens, temperature=0)
    except openai.APITimeoutError:
        pass
