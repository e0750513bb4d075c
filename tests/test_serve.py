"""`lofit serve`: OpenAI-compatible endpoints over a tiny random model, on loopback only."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import openai
import pytest
import torch

from lofit.adapter import load_adapter, save_adapter
from lofit.intervention import HeadIntervention
from serve_doubles import FaultPlan, PacedEngine, make_app, running_server

MODEL = "tiny"
PROMPT = "Q: What is the capital of France?\nA:"


def make_adapter(backbone, path: Path) -> Path:
    """Offsets large enough to move a random tiny model's log-probs visibly."""
    generator = torch.Generator().manual_seed(1)
    intervention = HeadIntervention(
        backbone.geometry, components=("offset",), heads=[(0, 1), (1, 2), (1, 0)], init_std=2.0, generator=generator
    )
    return save_adapter(intervention, path, base_model=backbone.name, model_type="llama")


def prompt_logprobs(backbone, prompt: str) -> list[float]:
    """Log-prob of every prompt token after the first, computed directly with the (hooked) model."""
    ids = backbone.encode(prompt)
    with torch.no_grad():
        logits = backbone.model(input_ids=torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.float(), dim=-1)
    return [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)


def stats(base_url: str) -> dict:
    return httpx2.get(base_url.removesuffix("/v1") + "/stats").json()


def test_models_endpoint_and_request_counter(tiny_backbone):
    with running_server(make_app(tiny_backbone, None, MODEL)) as url:
        models = client(url).models.list()
        assert [m.id for m in models.data] == [MODEL]
        client(url).completions.create(model=MODEL, prompt=PROMPT, max_tokens=1, temperature=0)
        counts = stats(url)
    assert counts["requests"] == 2
    assert counts["generation_requests"] == 1
    assert counts["by_path"] == {"/v1/models": 1, "/v1/completions": 1}


def test_adapter_logprobs_differ_exactly_as_the_hooked_model(tiny_backbone_factory, tmp_path):
    base = tiny_backbone_factory("llama", seed=3)
    adapted = tiny_backbone_factory("llama", seed=3)
    reference = tiny_backbone_factory("llama", seed=3)
    adapter = make_adapter(base, tmp_path / "adapter")
    with running_server(make_app(base, None, MODEL)) as base_url, running_server(
        make_app(adapted, str(adapter), MODEL)
    ) as adapted_url:
        served = {}
        for name, url in (("base", base_url), ("adapted", adapted_url)):
            response = client(url).completions.create(
                model=MODEL, prompt=PROMPT, max_tokens=0, echo=True, logprobs=1, temperature=0
            )
            choice = response.choices[0]
            assert choice.text == PROMPT
            assert choice.logprobs.token_logprobs[0] is None
            served[name] = torch.tensor(choice.logprobs.token_logprobs[1:])
    direct_base = torch.tensor(prompt_logprobs(base, PROMPT))
    with load_adapter(adapter, reference).applied(reference.model):
        direct_hooked = torch.tensor(prompt_logprobs(reference, PROMPT))
    torch.testing.assert_close(served["base"], direct_base, atol=1e-5, rtol=0)
    torch.testing.assert_close(served["adapted"], direct_hooked, atol=1e-5, rtol=0)
    shift = served["adapted"] - served["base"]
    torch.testing.assert_close(shift, direct_hooked - direct_base, atol=1e-5, rtol=0)
    assert shift.abs().max() > 1e-2


def test_greedy_completion_matches_uncached_argmax_and_logprob_format(tiny_backbone):
    app = make_app(tiny_backbone, None, MODEL)
    with running_server(app) as url:
        response = client(url).completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=3)
    ids = tiny_backbone.encode(PROMPT)
    out = torch.tensor([ids])
    with torch.no_grad():  # greedy without a KV cache: the server's cached loop must agree
        for _ in range(8):
            next_id = tiny_backbone.model(out).logits[0, -1].argmax()
            out = torch.cat([out, next_id.view(1, 1)], dim=1)
        logits = tiny_backbone.model(out).logits[0]
    new = out[0, len(ids) :].tolist()
    assert not set(new) & app.state.engine.eos_ids
    choice = response.choices[0]
    assert choice.text == tiny_backbone.tokenizer.decode(new)
    assert choice.finish_reason == "length"
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text
    assert lp.text_offset == [len(PROMPT) + len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    logp = torch.log_softmax(logits.float(), dim=-1)
    expected = [float(logp[len(ids) + i - 1, token]) for i, token in enumerate(new)]
    torch.testing.assert_close(torch.tensor(lp.token_logprobs), torch.tensor(expected), atol=1e-5, rtol=0)
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 3
        assert top[token] == pytest.approx(value) and value == pytest.approx(max(top.values()))


def test_stop_strings_and_seeded_sampling(tiny_backbone):
    with running_server(make_app(tiny_backbone, None, MODEL)) as url:
        api = client(url)
        full = api.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=1)
        pieces = full.choices[0].logprobs.tokens
        stop = pieces[3]
        cut = full.choices[0].text.index(stop)
        stopped = api.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, stop=[stop])
        sample = [
            api.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=1.0, seed=seed).choices[0].text
            for seed in (7, 7, 8)
        ]
    assert stopped.choices[0].text == full.choices[0].text[:cut]
    assert stopped.choices[0].finish_reason == "stop"
    assert sample[0] == sample[1] != sample[2]


def test_chat_uses_the_chat_template_or_a_documented_plain_join(tiny_backbone):
    seen: list[str] = []

    def script(prompt: str) -> str:
        seen.append(prompt)
        return "scripted"

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    with running_server(make_app(tiny_backbone, None, MODEL, scripted_reply=script)) as url:
        reply = client(url).chat.completions.create(model=MODEL, messages=messages)
    assert reply.choices[0].message.content == "scripted"
    assert seen[-1] == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"

    plain = copy.copy(tiny_backbone)
    plain.tokenizer = copy.deepcopy(tiny_backbone.tokenizer)
    plain.tokenizer.chat_template = None
    with running_server(make_app(plain, None, MODEL, scripted_reply=script)) as url:
        client(url).chat.completions.create(model=MODEL, messages=messages)
    assert seen[-1] == "System: Be brief.\n\nUser: hi\n\nAssistant:"


def test_chat_generation_round_trip_with_logprobs(tiny_backbone):
    with running_server(make_app(tiny_backbone, None, MODEL)) as url:
        reply = client(url).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0, logprobs=True, top_logprobs=2
        )
    choice = reply.choices[0]
    assert reply.usage.completion_tokens == 4
    assert "".join(t.token for t in choice.logprobs.content) == choice.message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in choice.logprobs.content)


BAD_REQUESTS = [
    ("/completions", {"prompt": "x"}, 400, "model"),
    ("/completions", {"model": MODEL}, 400, "prompt"),
    ("/completions", {"model": MODEL, "prompt": "x", "max_tokens": "5"}, 400, "max_tokens"),
    ("/completions", {"model": MODEL, "prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    ("/completions", {"model": MODEL, "prompt": "x", "max_tokens": 10**6}, 400, "max_tokens"),
    ("/completions", {"model": MODEL, "prompt": "x", "logprobs": 50}, 400, "logprobs"),
    ("/completions", {"model": MODEL, "prompt": "x", "temperature": 3}, 400, "temperature"),
    ("/completions", {"model": MODEL, "prompt": ""}, 400, "prompt"),
    ("/completions", {"model": MODEL, "prompt": "x", "stream": "yes"}, 400, "stream"),
    ("/completions", {"model": MODEL, "prompt": "x", "n": 2}, 400, "n"),
    ("/completions", {"model": MODEL, "prompt": "x", "stop": [""]}, 400, "stop"),
    ("/completions", {"model": "gpt-4o", "prompt": "x"}, 404, "model"),
    ("/chat/completions", {"model": MODEL, "messages": []}, 400, "messages"),
    ("/chat/completions", {"model": MODEL, "messages": "hi"}, 400, "messages"),
    ("/chat/completions", {"model": MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages.0.role"),
    ("/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content.str"),
    ("/chat/completions", b"{not json", 400, None),
    ("/chat/completions", b"[1, 2]", 400, None),
]


def test_malformed_requests_get_openai_style_4xx(tiny_backbone):
    with running_server(make_app(tiny_backbone, None, MODEL)) as url:
        for path, body, status, param in BAD_REQUESTS:
            if isinstance(body, bytes):
                response = httpx2.post(url + path, content=body, headers={"content-type": "application/json"})
            else:
                response = httpx2.post(url + path, json=body)
            assert response.status_code == status, (path, body, response.text)
            error = response.json()["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert error["param"] == param, (body, error)
            assert error["message"]
        missing = httpx2.get(url + "/nothing")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
        with pytest.raises(openai.NotFoundError):
            client(url).completions.create(model="other", prompt="x")


def test_fault_plan_is_consumed_one_entry_per_generation_request(tiny_backbone):
    plan = ["429", "503", "garbage", "html", "empty", "timeout:0.2", "ok"]
    with running_server(make_app(tiny_backbone, None, MODEL, fault_plan=plan)) as url:
        body = {"model": MODEL, "prompt": "x", "max_tokens": 1}
        responses = [httpx2.post(url + "/completions", json=body, timeout=10) for _ in range(len(plan) + 1)]
    assert [r.status_code for r in responses] == [429, 503, 200, 200, 200, 200, 200, 200]
    assert responses[0].json()["error"]["type"] == "rate_limit_error"
    assert responses[1].json()["error"]["type"] == "server_error"
    with pytest.raises(ValueError):
        responses[2].json()
    assert responses[3].headers["content-type"].startswith("text/html")
    assert responses[4].json() == {}
    assert all(r.json()["object"] == "text_completion" for r in responses[5:])
    with pytest.raises(ValueError, match="fault plan entry"):
        FaultPlan(["teapot"])


def test_queue_is_bounded(tiny_backbone):
    gate = threading.Event()
    app = make_app(tiny_backbone, None, MODEL, engine_type=PacedEngine, engine_options={"gate": gate}, max_batch=1, max_queue=1)
    engine = app.state.engine
    body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
    with running_server(app) as url:
        held: list = []
        clients = [threading.Thread(target=lambda: held.append(httpx2.post(url + "/completions", json=body, timeout=30))) for _ in range(2)]
        try:
            # The first holds the only batch row, then the second the only queue place; the second
            # starts only once the first has left the queue, or it would be refused in its stead.
            for thread, state in zip(clients, [(1, 0), (1, 1)]):
                thread.start()
                deadline = time.monotonic() + 60
                while (engine.active_rows, engine.queued) != state:
                    assert time.monotonic() < deadline, f"held {engine.active_rows} rows, {engine.queued} queued"
                    time.sleep(0.01)
            refused = httpx2.post(url + "/completions", json=body, timeout=10)
        finally:
            gate.set()
        for thread in clients:
            thread.join(timeout=30)
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "server_error"
    assert [r.status_code for r in held] == [200, 200]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_entry_point_loads_backbone_and_adapter(tiny_backbone_factory, tokenizer, tmp_path):
    backbone = tiny_backbone_factory("llama", seed=5)
    model_dir = tmp_path / "model"
    backbone.model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    adapter = make_adapter(backbone, tmp_path / "adapter")
    with load_adapter(adapter, backbone).applied(backbone.model):
        expected = prompt_logprobs(backbone, PROMPT)
    port = free_port()
    code = (
        "from lofit.backbone import BackboneConfig; from lofit.cli import serve; "
        f"serve(BackboneConfig(model={str(model_dir)!r}), adapter={str(adapter)!r}, port={port}, model_id='served')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "lofit serve exited early"
            assert time.monotonic() < deadline, "lofit serve did not start"
            try:
                models = httpx2.get(url + "/models", timeout=2).json()
                break
            except httpx2.TransportError:
                time.sleep(0.2)
        assert [m["id"] for m in models["data"]] == ["served-base", "served"]
        response = client(url).completions.create(model="served", prompt=PROMPT, max_tokens=0, echo=True, logprobs=0)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    torch.testing.assert_close(
        torch.tensor(response.choices[0].logprobs.token_logprobs[1:]), torch.tensor(expected), atol=1e-5, rtol=0
    )
