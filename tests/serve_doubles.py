"""Test doubles for `lofit serve`, kept out of the product: fault injection, scripted replies,
engines slowed or gated on purpose, and the in-process server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, Response

from lofit.backbone import Backbone
from lofit.serve.adapters import serve_models
from lofit.serve.app import GENERATION_PATHS, Limits, create_app
from lofit.serve.engine import Engine, Event, Job
from lofit.serve.main import adapter_specs, base_model_id
from lofit.serve.schemas import APIError
from lofit.serve.text import Generated, TokenLogprob

ScriptedReply = Callable[[str], "str | None"]


class FaultPlan:
    """Misbehaviour, one entry consumed per generation request, then normal service.

    Entries: "ok"; an HTTP status such as "429" or "500" (answered with an OpenAI error body);
    "timeout" or "timeout:SECONDS" (sleep, default 2 s, before answering normally, so a client
    with a shorter timeout gives up); "garbage" (200 with a truncated JSON body); "html" (200 with
    an HTML page); "empty" (200 with `{}`).
    """

    def __init__(self, entries: Sequence[str] | None) -> None:
        for entry in entries or []:
            self._check(entry)
        self._entries = list(entries or [])
        self._lock = threading.Lock()

    @staticmethod
    def _check(entry: str) -> None:
        name, _, arg = entry.partition(":")
        if name in ("ok", "garbage", "html", "empty") and not arg:
            return
        if name == "timeout":
            try:
                if not arg or float(arg) >= 0:
                    return
            except ValueError:
                pass
        if name.isdigit() and 400 <= int(name) <= 599 and not arg:
            return
        raise ValueError(f"fault plan entry {entry!r}: expected ok, <4xx/5xx status>, timeout[:s], garbage, html or empty")

    def next(self) -> str:
        with self._lock:
            return self._entries.pop(0) if self._entries else "ok"

    async def answer(self) -> Response | None:
        """The response the next entry calls for, or None to serve the request normally."""
        name, _, arg = self.next().partition(":")
        if name == "ok":
            return None
        if name == "timeout":
            await asyncio.sleep(float(arg or 2.0))
            return None
        if name == "garbage":
            return Response('{"id": "cmpl-x", "choices": [{"te', media_type="application/json")
        if name == "html":
            return Response("<html><body>502 Bad Gateway</body></html>", media_type="text/html")
        if name == "empty":
            return JSONResponse({})
        error = APIError(int(name), f"injected fault {name}")
        return JSONResponse(error.body(), status_code=error.status)


class FaultInjector:
    """ASGI middleware that answers generation requests as a `FaultPlan` says."""

    def __init__(self, app, plan: FaultPlan) -> None:
        self.app, self.plan = app, plan

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] in GENERATION_PATHS:
            response = await self.plan.answer()
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ScriptedEngine(Engine):
    """Answers a prompt with `script(prompt_text)` when that returns a string (log-prob 0 for the
    whole text as one token), and generates normally when it returns None."""

    def __init__(self, *args, script: ScriptedReply, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.script = script

    def submit(self, jobs: Iterable[Job]) -> None:
        generate = []
        for job in jobs:
            reply = self.script(job.prompt_text)
            if reply is None:
                generate.append(job)
                continue
            token = TokenLogprob(reply, 0.0, {reply: 0.0} if job.sampling.top_k else None, 0)
            result = Generated(reply, [token], "stop", len(job.prefix) + len(job.prompt), 1)
            job.deliver(Event(job.index, reply, [token], done=result))
        if generate:
            super().submit(generate)


class PacedEngine(Engine):
    """An engine whose decode steps wait: `step_s` seconds each, and for `gate` when one is given
    (so a test can hold requests in the batch or the queue as long as it needs)."""

    def __init__(self, *args, step_s: float = 0.0, gate: threading.Event | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.step_s, self.gate = step_s, gate

    def _step(self) -> None:
        if self.gate is not None:
            self.gate.wait()
        time.sleep(self.step_s)
        super()._step()


def make_app(
    backbone: Backbone,
    adapter: str | list[str] | None,
    model_id: str,
    fault_plan: Sequence[str] | None = None,
    *,
    scripted_reply: ScriptedReply | None = None,
    engine_type: type[Engine] = Engine,
    engine_options: dict | None = None,
    limits: Limits = Limits(),
    api_key: str | None = None,
    max_batch: int = 16,
    max_queue: int = 64,
) -> FastAPI:
    """A server as `lofit serve` builds it, with the doubles above where asked for."""
    specs = adapter_specs(adapter, model_id)
    models = serve_models(backbone, specs, base_model_id(specs, model_id))
    options = dict(engine_options or {})
    if scripted_reply is not None:
        engine_type, options["script"] = ScriptedEngine, scripted_reply
    engine = engine_type(backbone, models, max_batch=max_batch, max_queue=max_queue, **options)
    app = create_app(engine, limits=limits, api_key=api_key)
    if fault_plan is not None:  # innermost, so the request counter still sees faulted requests
        app.user_middleware.append(Middleware(FaultInjector, plan=FaultPlan(fault_plan)))
    return app


@contextlib.contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` with uvicorn in a background thread; yields its base URL (`http://host:port/v1`).

    Port 0 picks a free port. The server is stopped when the block exits."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, name="lofit-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"lofit serve failed to start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
