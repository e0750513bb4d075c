"""`lofit serve`: an OpenAI-compatible HTTP server for a backbone with an optional LoFiT adapter.

Why a server: the open-ended TruthfulQA evaluation is judged through an OpenAI-style API, and a
local endpoint that speaks the same protocol lets the judge client be tested end to end on
loopback (and lets any OpenAI client talk to a LoFiT-adapted model).

Endpoints
    GET  /v1/models             the one served model id.
    POST /v1/completions        legacy completions: `prompt` (a string or a list of strings),
                                `max_tokens` (default 16; 0 with `echo` scores the prompt),
                                `temperature` (0 = greedy, else sampling with `top_p` and `seed`),
                                `stop`, `logprobs` (top-k, OpenAI's legacy format: tokens,
                                token_logprobs, top_logprobs, text_offset) and `echo`.
    POST /v1/chat/completions   chat: the tokenizer's chat template is applied when it has one;
                                otherwise messages are joined as "Role: content" blocks separated by
                                blank lines and followed by "Assistant:". `logprobs`/`top_logprobs`
                                are returned in the chat format.
    GET  /stats                 request counters (for tests and monitoring).

Log-probs are those of the model's own distribution (temperature 1, no top-p), as OpenAI reports
them. Generation runs one request at a time under a lock (one model, no batching); at most
`max_queue` requests may wait, further ones get 503. Only `n = 1` and non-streamed responses are
supported; other OpenAI fields (penalties, logit_bias, user, ...) are accepted and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from lofit.backbone import Backbone

MAX_LOGPROBS = 20
DEFAULT_COMPLETION_TOKENS = 16
DEFAULT_CHAT_TOKENS = 256
GENERATION_PATHS = ("/v1/completions", "/v1/chat/completions")


# --------------------------------------------------------------------------- errors
class APIError(Exception):
    """An error answered as OpenAI's JSON body `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


def _status_type(status: int) -> str:
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    if status == 404:
        return "not_found_error"
    return "invalid_request_error"


# --------------------------------------------------------------------------- request schemas
class _Strict(BaseModel):
    """Strict JSON types (no "5" for 5); unknown fields are ignored like OpenAI's optional ones."""

    model_config = ConfigDict(strict=True, extra="ignore")


class CompletionRequest(_Strict):
    model: str
    prompt: str | list[str]
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = None
    stop: str | list[str] | None = None
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    seed: int | None = None
    stream: bool | None = None


class ContentPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatRequest(_Strict):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = None
    stop: str | list[str] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    seed: int | None = None
    stream: bool | None = None


def _parse(schema: type[_Strict], raw: bytes) -> _Strict:
    """Validate a JSON body; the first problem becomes a 400 naming the offending field."""
    try:
        return schema.model_validate_json(raw)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        where = f"'{param}': " if param else "request body: "
        raise APIError(400, where + first["msg"], param=param, code=first["type"]) from None


def _check_unsupported(body: CompletionRequest | ChatRequest) -> None:
    if body.stream:
        raise APIError(400, "'stream': streaming is not supported by lofit serve", param="stream")
    if body.n not in (None, 1):
        raise APIError(400, "'n': only n=1 is supported", param="n")


def _stop_list(stop: str | list[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if any(not s for s in stops):
        raise APIError(400, "'stop': stop strings must be non-empty", param="stop")
    if len(stops) > 4:
        raise APIError(400, "'stop': at most 4 stop strings are allowed", param="stop")
    return stops


# --------------------------------------------------------------------------- generation
@dataclass
class TokenLogprob:
    """One token of a completion (or of an echoed prompt) with its log-prob and alternatives."""

    token: str
    logprob: float | None
    top: dict[str, float] | None
    offset: int


@dataclass
class Generated:
    text: str
    tokens: list[TokenLogprob]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)


class Engine:
    """Runs one backbone (with its adapter hooks already attached) one request at a time."""

    def __init__(self, backbone: Backbone, max_queue: int) -> None:
        self.backbone = backbone
        self.lock = threading.Lock()
        self.max_queue = max_queue
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        model = backbone.model
        self.device = next(model.parameters()).device
        self.context_length = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        eos = {backbone.tokenizer.eos_token_id}
        generation_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos.update(generation_eos if isinstance(generation_eos, list) else [generation_eos])
        self.eos_ids = {int(e) for e in eos if e is not None}

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold the model; refuse with 503 when `max_queue` requests are already waiting."""
        with self._waiting_lock:
            if self._waiting >= self.max_queue:
                raise APIError(503, "server overloaded: too many queued requests; retry later", type="server_error")
            self._waiting += 1
        try:
            with self.lock:
                yield
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _piece(self, anchor: int | None, token: int) -> str:
        """A token's text in context: decoding it after its predecessor keeps a leading space that
        SentencePiece tokenizers drop when a token is decoded alone."""
        decode = self.backbone.tokenizer.decode
        if anchor is None:
            return decode([token])
        head = decode([anchor])
        both = decode([anchor, token])
        return both[len(head) :] if both.startswith(head) else decode([token])

    def _top(self, logp: torch.Tensor, anchor: int | None, k: int) -> dict[str, float]:
        values, ids = torch.topk(logp, k)
        top: dict[str, float] = {}
        for value, token in zip(values.tolist(), ids.tolist()):
            top.setdefault(self._piece(anchor, token), value)
        return top

    def check_length(self, prompt_len: int, max_tokens: int) -> None:
        if self.context_length is not None and prompt_len + max_tokens > self.context_length:
            raise APIError(
                400,
                f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) exceeds the model's context "
                f"length of {self.context_length}",
                param="max_tokens",
                code="context_length_exceeded",
            )

    @torch.inference_mode()
    def generate(
        self,
        prefix: list[int],
        prompt: list[int],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None,
        stop: Sequence[str],
        top_k: int | None,
        score_prompt: bool,
    ) -> Generated:
        """Greedy (temperature 0) or sampled continuation of `prefix + prompt` with a KV cache.

        `prefix` holds special tokens (BOS) that are fed but not reported; `score_prompt` also
        returns the log-prob of every prompt token (for `echo`)."""
        model, tokenizer = self.backbone.model, self.backbone.tokenizer
        context = prefix + prompt
        self.check_length(len(context), max_tokens)
        result = Generated("", [], "length", len(context), 0)
        if score_prompt:
            result.prompt_logprobs = self._prompt_logprobs(prefix, prompt, top_k)
        if max_tokens == 0:
            return result
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        out = model(input_ids=torch.tensor([context], device=self.device), use_cache=True, logits_to_keep=1)
        past = out.past_key_values
        logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        head = tokenizer.decode(context, skip_special_tokens=True)
        new: list[int] = []
        text = ""
        longest_stop = max((len(s) for s in stop), default=0)
        for step in range(max_tokens):
            token = self._choose(logp, temperature, top_p, generator)
            if token in self.eos_ids:
                result.finish_reason = "stop"
                break
            anchor = (context + new)[-1] if (context or new) else None
            new.append(token)
            full = tokenizer.decode(context + new, skip_special_tokens=True)
            new_text = full[len(head) :] if full.startswith(head) else tokenizer.decode(new, skip_special_tokens=True)
            entry = TokenLogprob(
                self._piece(anchor, token),
                float(logp[token]),
                self._top(logp, anchor, top_k) if top_k else None,
                len(text),
            )
            result.tokens.append(entry)
            search_from = max(0, len(text) - longest_stop)
            text = new_text
            cut = min((i for s in stop if (i := text.find(s, search_from)) >= 0), default=-1)
            if cut >= 0:
                text = text[:cut]
                result.tokens = [t for t in result.tokens if t.offset < cut]
                result.finish_reason = "stop"
                break
            if step + 1 < max_tokens:
                out = model(input_ids=torch.tensor([[token]], device=self.device), past_key_values=past, use_cache=True)
                past = out.past_key_values
                logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        result.text = text
        result.completion_tokens = len(new)
        return result

    def _prompt_logprobs(self, prefix: list[int], prompt: list[int], top_k: int | None) -> list[TokenLogprob]:
        """Log-prob of each prompt token given the ones before it (None for a first token with no BOS)."""
        context = prefix + prompt
        if not prompt:
            return []
        logits = self.backbone.model(input_ids=torch.tensor([context], device=self.device)).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        decode = self.backbone.tokenizer.decode
        entries: list[TokenLogprob] = []
        for i, token in enumerate(prompt):
            position = len(prefix) + i
            anchor = context[position - 1] if position > 0 else None
            offset = len(decode(prompt[:i])) if i else 0
            if position == 0:
                entries.append(TokenLogprob(self._piece(None, token), None, None, offset))
                continue
            row = logp[position - 1]
            top = self._top(row, anchor, top_k) if top_k else None
            entries.append(TokenLogprob(self._piece(anchor, token), float(row[token]), top, offset))
        return entries

    @staticmethod
    def _choose(logp: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
        if temperature == 0:
            return int(torch.argmax(logp))
        probs = torch.softmax(logp / temperature, dim=-1).cpu()
        if top_p < 1:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, 0) - sorted_probs < top_p
            probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=generator))


# --------------------------------------------------------------------------- fault injection
class FaultPlan:
    """Test-only misbehaviour, one entry consumed per generation request, then normal service.

    Entries: "ok"; an HTTP status such as "429" or "500" (answered with an OpenAI error body);
    "timeout" or "timeout:SECONDS" (sleep, default 2 s, before answering normally, so a client
    with a shorter timeout gives up); "garbage" (200 with a truncated JSON body); "html" (200 with
    an HTML page); "empty" (200 with `{}`). Never used by `lofit serve` itself.
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

    async def apply(self) -> Response | None:
        """Answer the request according to the next entry, or None to serve it normally."""
        entry = self.next()
        name, _, arg = entry.partition(":")
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
        status = int(name)
        return APIError(status, f"injected fault {status}", type=_status_type(status)).response()


# --------------------------------------------------------------------------- app
ScriptedReply = Callable[[str], "str | None"]


def create_app(
    backbone: Backbone,
    adapter_path: str | None,
    model_id: str,
    fault_plan: Sequence[str] | None = None,
    *,
    scripted_reply: ScriptedReply | None = None,
    max_queue: int = 32,
) -> FastAPI:
    """Build the server for `backbone`; an adapter is loaded and hooked into `backbone.model` for good.

    Args:
        backbone: the frozen model (its model is modified in place by the adapter hooks).
        adapter_path: an edit folder (LoFiT/ITI adapter, LoRA, RED, RepE steering), or None for the base model.
        model_id: the only model name requests may ask for.
        fault_plan: test-only misbehaviour, see `FaultPlan`.
        scripted_reply: test-only: called with the rendered prompt text; a string return is sent
            as the reply (log-prob 0 for the whole text as one token) instead of generating.
        max_queue: requests allowed to wait for the model before 503s.
    """
    if adapter_path is not None:
        from lofit.methods.loading import load_edit

        load_edit(adapter_path, backbone).attach(backbone.model, backbone.family)
    engine = Engine(backbone, max_queue)
    faults = FaultPlan(fault_plan)
    app = FastAPI(title="lofit serve", docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.state.requests = Counter()
    app.state.adapter = adapter_path
    counter_lock = threading.Lock()

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        if request.url.path != "/stats":
            with counter_lock:
                app.state.requests[request.url.path] += 1
        return await call_next(request)

    @app.exception_handler(APIError)
    async def api_error(_request: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, err: StarletteHTTPException) -> JSONResponse:
        return APIError(err.status_code, str(err.detail), type=_status_type(err.status_code)).response()

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, err: Exception) -> JSONResponse:
        return APIError(500, f"internal error: {type(err).__name__}: {err}", type="server_error").response()

    def check_model(name: str) -> None:
        if name != model_id:
            raise APIError(404, f"model '{name}' does not exist; this server serves '{model_id}'", param="model", code="model_not_found")

    def run(prefix: list[int], prompt: list[int], prompt_text: str, **kwargs) -> Generated:
        reply = scripted_reply(prompt_text) if scripted_reply is not None else None
        if reply is not None:
            top = {reply: 0.0} if kwargs["top_k"] else None
            token = TokenLogprob(reply, 0.0, top, 0)
            return Generated(reply, [token], "stop", len(prefix) + len(prompt), 1)
        with engine.slot():
            return engine.generate(prefix, prompt, **kwargs)

    @app.get("/v1/models")
    async def list_models() -> dict:
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "lofit"}]}

    @app.get("/stats")
    async def stats() -> dict:
        with counter_lock:
            by_path = dict(app.state.requests)
        return {
            "requests": sum(by_path.values()),
            "generation_requests": sum(by_path.get(p, 0) for p in GENERATION_PATHS),
            "by_path": by_path,
            "model": model_id,
            "adapter": adapter_path,
        }

    async def admit(request: Request, schema: type[_Strict]) -> tuple[_Strict | None, Response | None]:
        """The preamble of every generation request: read, apply a test fault, parse and check."""
        raw = await request.body()
        fault = await faults.apply()
        if fault is not None:
            return None, fault
        body = _parse(schema, raw)
        check_model(body.model)
        _check_unsupported(body)
        return body, None

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body, fault = await admit(request, CompletionRequest)
        if fault is not None:
            return fault
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts or not all(prompts):
            raise APIError(400, "'prompt': must be a non-empty string or a non-empty list of them", param="prompt")
        stop = _stop_list(body.stop)
        max_tokens = DEFAULT_COMPLETION_TOKENS if body.max_tokens is None else body.max_tokens
        choices, usage = [], Counter()
        for index, prompt_text in enumerate(prompts):
            ids = backbone.encode(prompt_text, add_bos=False)
            result = await run_in_threadpool(
                run,
                list(backbone.bos_ids),
                ids,
                prompt_text,
                max_tokens=max_tokens,
                temperature=1.0 if body.temperature is None else body.temperature,
                top_p=1.0 if body.top_p is None else body.top_p,
                seed=body.seed,
                stop=stop,
                top_k=body.logprobs,
                score_prompt=body.echo and body.logprobs is not None,
            )
            usage["prompt_tokens"] += result.prompt_tokens
            usage["completion_tokens"] += result.completion_tokens
            choices.append(_completion_choice(index, prompt_text, result, body.echo, body.logprobs is not None))
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return JSONResponse(
            {
                "id": f"cmpl-{uuid.uuid4().hex}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": model_id,
                "choices": choices,
                "usage": dict(usage),
            }
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body, fault = await admit(request, ChatRequest)
        if fault is not None:
            return fault
        stop = _stop_list(body.stop)
        prompt_text, prefix, ids = _render_chat(backbone, body.messages)
        limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        if limit is None:
            room = engine.context_length - len(prefix) - len(ids) if engine.context_length else DEFAULT_CHAT_TOKENS
            limit = max(0, min(DEFAULT_CHAT_TOKENS, room))
        top_k = (body.top_logprobs or 0) if body.logprobs else None
        result = await run_in_threadpool(
            run,
            prefix,
            ids,
            prompt_text,
            max_tokens=limit,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=body.seed,
            stop=stop,
            top_k=top_k,
            score_prompt=False,
        )
        logprobs = None
        if body.logprobs:
            logprobs = {"content": [_chat_token(t) for t in result.tokens], "refusal": None}
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model_id,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.text, "refusal": None},
                        "logprobs": logprobs,
                        "finish_reason": result.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens,
                    "total_tokens": result.prompt_tokens + result.completion_tokens,
                },
            }
        )

    return app


def _render_chat(backbone: Backbone, messages: Sequence[ChatMessage]) -> tuple[str, list[int], list[int]]:
    """Prompt text, special prefix ids and prompt ids of a conversation.

    With a chat template the rendered text carries its own special tokens (so no BOS is added);
    without one, "Role: content" blocks are joined by blank lines and end with "Assistant:"."""
    tokenizer = backbone.tokenizer
    if getattr(tokenizer, "chat_template", None):
        plain = [{"role": m.role, "content": m.text()} for m in messages]
        text = tokenizer.apply_chat_template(plain, add_generation_prompt=True, tokenize=False)
        return text, [], tokenizer(text, add_special_tokens=False)["input_ids"]
    text = "\n\n".join(f"{m.role.capitalize()}: {m.text()}" for m in messages) + "\n\nAssistant:"
    return text, list(backbone.bos_ids), backbone.encode(text, add_bos=False)


def _completion_choice(index: int, prompt: str, result: Generated, echo: bool, with_logprobs: bool) -> dict:
    """One legacy completion choice; with `echo` the prompt text and its tokens come first."""
    text = (prompt + result.text) if echo else result.text
    logprobs = None
    if with_logprobs:
        shift = len(prompt)
        entries = ([(t, t.offset) for t in result.prompt_logprobs] if echo else []) + [
            (t, t.offset + shift) for t in result.tokens
        ]
        logprobs = {
            "tokens": [t.token for t, _ in entries],
            "token_logprobs": [t.logprob for t, _ in entries],
            "top_logprobs": [t.top for t, _ in entries],
            "text_offset": [offset for _, offset in entries],
        }
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": result.finish_reason}


def _chat_token(token: TokenLogprob) -> dict:
    def entry(text: str, logprob: float | None) -> dict:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    return {**entry(token.token, token.logprob), "top_logprobs": [entry(k, v) for k, v in (token.top or {}).items()]}


# --------------------------------------------------------------------------- running
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

