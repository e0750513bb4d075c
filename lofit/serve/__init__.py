"""`lofit serve`: an OpenAI-compatible HTTP server for a backbone and any number of LoFiT adapters.

Why a server: the open-ended TruthfulQA evaluation is judged through an OpenAI-style API, and a
local endpoint that speaks the same protocol lets the judge client be tested end to end on
loopback; and since a LoFiT adapter is a few KB of per-head offsets, one base model can serve
many tasks at once, each request choosing its adapter by `model`.

Endpoints
    GET  /v1/models             the served model ids: the base model and every adapter.
    POST /v1/completions        legacy completions: `prompt` (a string or a list of strings),
                                `max_tokens` (default 16; 0 with `echo` scores the prompt),
                                `temperature` (0 = greedy, else sampling with `top_p` and `seed`),
                                `stop`, `logprobs` (top-k, OpenAI's legacy format: tokens,
                                token_logprobs, top_logprobs, text_offset), `echo`, `stream`.
    POST /v1/chat/completions   chat: the tokenizer's chat template is applied when it has one;
                                otherwise messages are joined as "Role: content" blocks separated by
                                blank lines and followed by "Assistant:". `logprobs`/`top_logprobs`
                                are returned in the chat format; `stream` sends chunks.
    GET  /stats                 request counters and the engine's state (tests and monitoring).

`stream: true` answers with server-sent events (`data: {chunk}` ... `data: [DONE]`), as OpenAI
does; `stream_options.include_usage` adds a usage chunk. Log-probs are those of the model's own
distribution (temperature 1, no top-p), as OpenAI reports them. Requests are batched
continuously (`engine`); a client that disconnects is dropped before the next decode step.
Limits (`app.Limits`, the engine's queue) answer 413/400/503 with OpenAI-style error bodies; with
an API key, requests without `Authorization: Bearer <key>` get 401. Only `n = 1` is supported;
other OpenAI fields (penalties, logit_bias, user, ...) are accepted and ignored.

Files: `schemas` (request bodies, errors), `text` (token text and log-probs), `adapters` (which
model id selects which adapter; the stacked LoFiT hook), `engine` (continuous batching), `app`
(HTTP routes), `main` (the CLI entry).
"""
