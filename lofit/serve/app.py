"""The HTTP side of `lofit serve`: OpenAI-compatible routes over an `Engine`.

Nothing slow runs on the event loop: tokenization and chat-template rendering go to worker
threads and generation to the engine's decode thread, which reports back through an asyncio
queue. A request whose client disconnects (streamed or not) is cancelled at once, so it leaves
the running batch before the engine's next decode step.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lofit.backbone import Backbone
from lofit.serve.engine import Engine, Event, Job, Sampling
from lofit.serve.schemas import APIError, ChatMessage, ChatRequest, CompletionRequest, parse
from lofit.serve.text import Generated, TokenLogprob

DEFAULT_COMPLETION_TOKENS = 16
DEFAULT_CHAT_TOKENS = 256
GENERATION_PATHS = ("/v1/completions", "/v1/chat/completions")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; anything beyond is refused before it reaches the engine.

    Args:
        max_body_bytes: largest request body (413 beyond).
        max_prompt_tokens: longest prompt after tokenization, special tokens included (400 beyond).
        max_tokens: largest `max_tokens` / `max_completion_tokens` (400 beyond).
    """

    max_body_bytes: int = 2_000_000
    max_prompt_tokens: int = 4096
    max_tokens: int = 2048

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_prompt_tokens", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")


def error_response(err: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


class RequestCounter:
    """Requests seen per path (for `/stats`: tests and monitoring)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, path: str) -> None:
        with self._lock:
            self._counts[path] += 1

    def by_path(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class Gate:
    """ASGI middleware in front of every route: counts the request, then checks the API key."""

    def __init__(self, app, counter: RequestCounter, api_key: str | None) -> None:
        self.app, self.counter, self.api_key = app, counter, api_key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            if scope["path"] != "/stats":
                self.counter.count(scope["path"])
            if self.api_key is not None and not self._authorized(scope):
                message = "missing or wrong API key: send 'Authorization: Bearer <key>'"
                await error_response(APIError(401, message, code="invalid_api_key"))(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _authorized(self, scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())


async def read_json_body(request: Request, limit: int) -> bytes:
    """The raw body of a JSON request: 415 for another content type, 413 past `limit` bytes."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise APIError(415, f"content type must be application/json, got '{content_type or 'none'}'")
    too_large = APIError(413, f"request body exceeds {limit} bytes", code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _disconnected(request: Request) -> None:
    """Return when the client goes away (the body has already been read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class ClientGone(Exception):
    """The client disconnected before its result was ready."""


async def engine_events(engine: Engine, request: Request, jobs: list[Job], queue: asyncio.Queue) -> AsyncIterator[Event]:
    """The engine's events for `jobs` until all are done; the jobs are cancelled if the client
    disconnects or the consumer stops early. Raises APIError(500) on an engine failure."""
    waiting = {job.index for job in jobs}
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        while waiting:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                raise ClientGone
            event = getter.result()
            if event.error is not None:
                raise APIError(500, event.error)
            if event.done is not None:
                waiting.discard(event.index)
            yield event
    finally:
        gone.cancel()
        if waiting:
            engine.cancel(jobs)


def sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def create_app(engine: Engine, *, limits: Limits = Limits(), api_key: str | None = None) -> FastAPI:
    """The OpenAI-compatible app over `engine` (see `lofit.serve` for the endpoints).

    Args:
        engine: the generation engine; it is closed when the app shuts down.
        limits: per-request caps.
        api_key: if set, every request must carry `Authorization: Bearer <api_key>` (401 otherwise).
    """
    backbone = engine.backbone

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(engine.close)

    app = FastAPI(title="lofit serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.engine = engine
    app.state.counter = RequestCounter()
    app.add_middleware(Gate, counter=app.state.counter, api_key=api_key)

    @app.exception_handler(APIError)
    async def api_error(_request: Request, err: APIError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(APIError(err.status_code, str(err.detail)))

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, err: Exception) -> JSONResponse:
        return error_response(APIError(500, f"internal error: {type(err).__name__}: {err}"))

    def adapter_index(name: str) -> int:
        index = engine.models.index(name)
        if index is None:
            served = ", ".join(f"'{m}'" for m in engine.models.ids)
            raise APIError(404, f"model '{name}' does not exist; this server serves {served}", param="model", code="model_not_found")
        return index

    def check_prompt(prefix: list[int], ids: list[int], max_tokens: int) -> None:
        length = len(prefix) + len(ids)
        if length > limits.max_prompt_tokens:
            raise APIError(
                400, f"prompt has {length} tokens, more than this server's limit of {limits.max_prompt_tokens}",
                param="prompt", code="context_length_exceeded",
            )  # fmt: skip
        engine.check_length(length, max_tokens)

    def check_max_tokens(value: int, param: str) -> None:
        if value > limits.max_tokens:
            raise APIError(400, f"'{param}': {value} is more than this server's limit of {limits.max_tokens}", param=param)

    def start(prompts: Sequence[tuple[list[int], list[int], str]], sampling: Sampling, adapter: int, stream: bool):
        """Submit one job per prompt; their events arrive on the returned queue."""
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()

        def deliver(event: Event) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, event)

        jobs = [
            Job(index, prefix, ids, text, sampling, deliver, adapter=adapter, stream=stream)
            for index, (prefix, ids, text) in enumerate(prompts)
        ]
        engine.submit(jobs)
        return jobs, queue

    async def results(request: Request, jobs: list[Job], queue: asyncio.Queue) -> list[Generated] | None:
        """Every job's result in order, or None when the client went away first."""
        done: dict[int, Generated] = {}
        try:
            async for event in engine_events(engine, request, jobs, queue):
                if event.done is not None:
                    done[event.index] = event.done
        except ClientGone:
            return None
        return [done[job.index] for job in jobs]

    @app.get("/v1/models")
    async def list_models() -> dict:
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "lofit"} for name in engine.models.ids]
        return {"object": "list", "data": data}

    @app.get("/stats")
    async def stats() -> dict:
        by_path = app.state.counter.by_path()
        return {
            "requests": sum(by_path.values()),
            "generation_requests": sum(by_path.get(p, 0) for p in GENERATION_PATHS),
            "by_path": by_path,
            "models": engine.models.paths,
            "active_rows": engine.active_rows,
            "queued": engine.queued,
            "decode_steps": engine.steps,
        }

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = parse(CompletionRequest, await read_json_body(request, limits.max_body_bytes))
        adapter = adapter_index(body.model)
        body.check_supported()
        stop = body.stop_strings()
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not texts or not all(texts):
            raise APIError(400, "'prompt': must be a non-empty string or a non-empty list of them", param="prompt")
        if body.stream and body.echo:
            raise APIError(400, "'echo': not supported together with 'stream'", param="echo")
        max_tokens = DEFAULT_COMPLETION_TOKENS if body.max_tokens is None else body.max_tokens
        check_max_tokens(max_tokens, "max_tokens")
        prompt_format = engine.models.prompt_format(body.model)
        if prompt_format.chat_template:  # the adapter's training format: each prompt becomes its rendered user turn
            texts = await asyncio.to_thread(lambda: [prompt_format.render(backbone.tokenizer, text) for text in texts])
        prefix = list(backbone.bos_ids)
        encode = backbone.rendered_body if prompt_format.chat_template else partial(backbone.encode, add_bos=False)
        encoded = await asyncio.to_thread(lambda: [encode(text) for text in texts])
        for ids in encoded:
            check_prompt(prefix, ids, max_tokens)
        sampling = sampling_for(body, max_tokens, stop, top_k=body.logprobs, score_prompt=body.echo and body.logprobs is not None)
        jobs, queue = start([(prefix, ids, text) for ids, text in zip(encoded, texts)], sampling, adapter, bool(body.stream))
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()), "model": body.model}
        with_logprobs = body.logprobs is not None
        if body.stream:
            return StreamingResponse(
                completion_stream(request, jobs, queue, head, texts, with_logprobs, body.include_usage),
                media_type="text/event-stream",
            )
        finished = await results(request, jobs, queue)
        if finished is None:
            return Response(status_code=499)
        choices = [
            completion_choice(index, text, result, body.echo, with_logprobs)
            for index, (text, result) in enumerate(zip(texts, finished))
        ]
        return JSONResponse({**head, "choices": choices, "usage": usage(finished)})

    async def event_stream(
        request, jobs, queue, head: dict, include_usage: bool, render: Callable[[Event], list[str]], opening: Sequence[str] = ()
    ) -> AsyncIterator[str]:
        """The SSE body both endpoints share: `opening`, each event as `render` writes it, usage, [DONE].

        A client that went away ends the stream silently (its rows are already cancelled); an
        engine error ends it with an OpenAI-style error event."""
        finished: list[Generated] = []
        try:
            for line in opening:
                yield line
            async for event in engine_events(engine, request, jobs, queue):
                for line in render(event):
                    yield line
                if event.done is not None:
                    finished.append(event.done)
        except ClientGone:
            return
        except APIError as err:
            yield sse(err.body())
            return
        if include_usage:
            yield sse({**head, "choices": [], "usage": usage(finished)})
        yield sse("[DONE]")

    def completion_stream(request, jobs, queue, head, texts, with_logprobs, include_usage) -> AsyncIterator[str]:
        def render(event: Event) -> list[str]:
            shift = len(texts[event.index])
            logprobs = legacy_logprobs([(t, t.offset + shift) for t in event.tokens]) if with_logprobs else None
            choice = {"index": event.index, "text": event.text, "logprobs": logprobs, "finish_reason": None}
            lines = [sse({**head, "choices": [choice]})] if event.text or event.tokens else []
            if event.done is not None:
                final = {**choice, "text": "", "logprobs": None, "finish_reason": event.done.finish_reason}
                lines.append(sse({**head, "choices": [final]}))
            return lines

        return event_stream(request, jobs, queue, head, include_usage, render)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = parse(ChatRequest, await read_json_body(request, limits.max_body_bytes))
        adapter = adapter_index(body.model)
        body.check_supported()
        stop = body.stop_strings()
        if body.max_completion_tokens is not None:
            check_max_tokens(body.max_completion_tokens, "max_completion_tokens")
        elif body.max_tokens is not None:
            check_max_tokens(body.max_tokens, "max_tokens")
        system_prompt = engine.models.prompt_format(body.model).system_prompt
        prompt_text, prefix, ids = await asyncio.to_thread(render_chat, backbone, body.messages, system_prompt)
        limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        if limit is None:
            room = engine.context_length - len(prefix) - len(ids) if engine.context_length else DEFAULT_CHAT_TOKENS
            limit = max(0, min(DEFAULT_CHAT_TOKENS, limits.max_tokens, room))
        check_prompt(prefix, ids, limit)
        sampling = sampling_for(body, limit, stop, top_k=(body.top_logprobs or 0) if body.logprobs else None)
        jobs, queue = start([(prefix, ids, prompt_text)], sampling, adapter, bool(body.stream))
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": body.model}
        if body.stream:
            return StreamingResponse(
                chat_stream(request, jobs, queue, head, bool(body.logprobs), body.include_usage),
                media_type="text/event-stream",
            )
        finished = await results(request, jobs, queue)
        if finished is None:
            return Response(status_code=499)
        (result,) = finished
        logprobs = {"content": [chat_token(t) for t in result.tokens], "refusal": None} if body.logprobs else None
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": result.text, "refusal": None},
            "logprobs": logprobs,
            "finish_reason": result.finish_reason,
        }
        return JSONResponse({**head, "object": "chat.completion", "choices": [choice], "usage": usage(finished)})

    def chat_stream(request, jobs, queue, head, with_logprobs, include_usage) -> AsyncIterator[str]:
        head = {**head, "object": "chat.completion.chunk"}

        def chunk(delta: dict, tokens: list[TokenLogprob] | None, finish_reason: str | None) -> str:
            logprobs = {"content": [chat_token(t) for t in tokens], "refusal": None} if tokens else None
            return sse({**head, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}]})

        def render(event: Event) -> list[str]:
            lines = [chunk({"content": event.text}, event.tokens if with_logprobs else None, None)] if event.text or event.tokens else []
            if event.done is not None:
                lines.append(chunk({}, None, event.done.finish_reason))
            return lines

        opening = [chunk({"role": "assistant", "content": ""}, None, None)]
        return event_stream(request, jobs, queue, head, include_usage, render, opening)

    return app


def sampling_for(
    body: CompletionRequest | ChatRequest, max_tokens: int, stop: tuple[str, ...], top_k: int | None, score_prompt: bool = False
) -> Sampling:
    """How a request samples: its own temperature, top_p and seed (OpenAI's defaults when unset)."""
    return Sampling(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=body.seed,
        stop=stop,
        top_k=top_k,
        score_prompt=score_prompt,
    )


def render_chat(
    backbone: Backbone, messages: Sequence[ChatMessage], system_prompt: str | None = None
) -> tuple[str, list[int], list[int]]:
    """Prompt text, special prefix ids and prompt ids of a conversation.

    With a chat template the rendered text carries its own special tokens (so no BOS is added),
    and `system_prompt` (the adapter's, from training) opens a conversation that has no system
    message; without one, "Role: content" blocks are joined by blank lines and end with "Assistant:"."""
    tokenizer = backbone.tokenizer
    if getattr(tokenizer, "chat_template", None):
        plain = [{"role": m.role, "content": m.text()} for m in messages]
        if system_prompt is not None and not any(m["role"] == "system" for m in plain):
            plain.insert(0, {"role": "system", "content": system_prompt})
        text = tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=False)
        return text, [], tokenizer(text, add_special_tokens=False)["input_ids"]
    text = "\n\n".join(f"{m.role.capitalize()}: {m.text()}" for m in messages) + "\n\nAssistant:"
    return text, list(backbone.bos_ids), backbone.encode(text, add_bos=False)


def usage(results: Sequence[Generated]) -> dict:
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def legacy_logprobs(entries: Sequence[tuple[TokenLogprob, int]]) -> dict:
    """OpenAI's legacy completion log-probs of (token, text offset) pairs."""
    return {
        "tokens": [t.token for t, _ in entries],
        "token_logprobs": [t.logprob for t, _ in entries],
        "top_logprobs": [t.top for t, _ in entries],
        "text_offset": [offset for _, offset in entries],
    }


def completion_choice(index: int, prompt: str, result: Generated, echo: bool, with_logprobs: bool) -> dict:
    """One legacy completion choice; with `echo` the prompt text and its tokens come first."""
    text = (prompt + result.text) if echo else result.text
    logprobs = None
    if with_logprobs:
        shift = len(prompt)
        entries = ([(t, t.offset) for t in result.prompt_logprobs] if echo else []) + [
            (t, t.offset + shift) for t in result.tokens
        ]
        logprobs = legacy_logprobs(entries)
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": result.finish_reason}


def chat_token(token: TokenLogprob) -> dict:
    def entry(text: str, logprob: float | None) -> dict:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {**entry(token.token, token.logprob), "top_logprobs": [entry(k, v) for k, v in (token.top or {}).items()]}
