"""The generation engine: continuous batching over one KV cache, in its own thread.

Prompts that arrive together are prefilled together (left-padded, with an attention mask and
per-row position ids), then join the running batch at the next decode step: their cache is
left-padded (or the batch's is) to a common length and stacked on the batch dimension. Each decode step feeds one
token per row with a padding-aware attention mask and each row's own position ids, so a row's
logits are those of its sequence alone up to float rounding. A row leaves the batch when it
stops (EOS, a stop string, its `max_tokens`) or when its client goes away, checked before every
step, so a disconnected client frees its slot within one decode step.

Families whose cache is not a plain growing one (sliding-window layers such as Gemma 3's) cannot
be left-padded exactly; they are served one row at a time by the same loop.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from lofit.backbone import Backbone
from lofit.serve.adapters import ServedModels
from lofit.serve.schemas import APIError
from lofit.serve.text import ANCHOR_TOKENS, Generated, TokenLogprob, TokenText


PREFILL_PADDING = 0.2


@dataclass(frozen=True)
class Sampling:
    """How one prompt is continued (already validated by the app)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_k: int | None = None
    score_prompt: bool = False


@dataclass
class Event:
    """What the engine reports about job `index`: new text (streaming), the end, or a failure."""

    index: int
    text: str = ""
    tokens: list[TokenLogprob] = field(default_factory=list)
    done: Generated | None = None
    error: str | None = None


@dataclass(eq=False)
class Job:
    """One prompt to continue. `deliver` is called from the engine thread with each `Event`.

    `prompt_text` is the prompt as the client rendered it, kept with its ids for inspection."""

    index: int
    prefix: list[int]
    prompt: list[int]
    prompt_text: str
    sampling: Sampling
    deliver: Callable[[Event], None]
    adapter: int = 0
    stream: bool = False
    cancelled: bool = False


@dataclass(eq=False)
class _Row:
    """A job in the running batch."""

    job: Job
    generator: torch.Generator
    length: int  # real (unpadded) tokens in the cache
    logp: torch.Tensor  # log-probs of its next token
    anchor: list[int]
    anchor_text: str
    result: Generated
    new: list[int] = field(default_factory=list)
    sent_chars: int = 0
    sent_tokens: int = 0


def _pad_left(tensor: torch.Tensor, amount: int, dim: int) -> torch.Tensor:
    if amount == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = amount
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class Engine:
    """Runs one backbone (with its adapters hooked in) for many concurrent requests.

    Args:
        backbone: the frozen model and tokenizer.
        models: the model ids served and their adapter rows.
        max_batch: rows decoded together at most; more prompts wait.
        max_queue: prompts allowed to wait for a row before `submit` refuses with 503.
    """

    def __init__(self, backbone: Backbone, models: ServedModels, *, max_batch: int = 16, max_queue: int = 64) -> None:
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch must be ≥ 1 and max_queue ≥ 0, got {max_batch} and {max_queue}")
        self.backbone = backbone
        self.models = models
        self.text = TokenText(backbone.tokenizer)
        model = backbone.model
        self.device = next(model.parameters()).device
        self.context_length = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        eos = {backbone.tokenizer.eos_token_id}
        generation_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos.update(generation_eos if isinstance(generation_eos, list) else [generation_eos])
        self.eos_ids = {int(e) for e in eos if e is not None}
        plain_cache = all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)
        self.max_batch = max_batch if plain_cache else 1
        self.max_queue = max_queue
        self._pending: deque[Job] = deque()
        self._rows: list[_Row] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # (rows, cache length): 1 real token, 0 padding
        self._condition = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.steps = 0

    # ----------------------------------------------------------------- client side
    @property
    def active_rows(self) -> int:
        return len(self._rows)

    @property
    def queued(self) -> int:
        return len(self._pending)

    def check_length(self, prompt_len: int, max_tokens: int) -> None:
        if self.context_length is not None and prompt_len + max_tokens > self.context_length:
            raise APIError(
                400,
                f"prompt ({prompt_len} tokens) + max_tokens ({max_tokens}) exceeds the model's context "
                f"length of {self.context_length}",
                param="max_tokens",
                code="context_length_exceeded",
            )

    def submit(self, jobs: Iterable[Job]) -> None:
        """Queue the jobs (all or none); 503 when that would exceed `max_queue` waiting prompts."""
        jobs = list(jobs)
        with self._condition:
            if self._closed:
                raise APIError(503, "server is shutting down")
            if len(self._pending) + len(jobs) > self.max_queue:
                raise APIError(503, "server overloaded: too many queued requests; retry later")
            self._pending.extend(jobs)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="lofit-engine", daemon=True)
                self._thread.start()
            self._condition.notify()

    def cancel(self, jobs: Iterable[Job]) -> None:
        """Drop the jobs: waiting ones at once, running ones before the next decode step."""
        with self._condition:
            for job in jobs:
                job.cancelled = True
            self._condition.notify()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # ----------------------------------------------------------------- decode thread
    def _loop(self) -> None:
        while True:
            with self._condition:
                self._drop_cancelled_pending()
                while not self._closed and not self._pending and not self._rows:
                    self._condition.wait()
                    self._drop_cancelled_pending()
                if self._closed:
                    break
                admitted = [self._pending.popleft() for _ in range(min(len(self._pending), self.max_batch - len(self._rows)))]
            try:
                with torch.inference_mode():
                    self._admit(admitted)
                    self._step()
            except Exception as err:  # a failed forward fails the rows it held, not the server
                message = f"generation failed: {type(err).__name__}: {err}"
                for job in dict.fromkeys([*admitted, *(row.job for row in self._rows)]):
                    job.deliver(Event(job.index, error=message))
                self._rows, self._cache, self._mask = [], None, None
        for row in self._rows:
            row.job.deliver(Event(row.job.index, error="server is shutting down"))
        for job in self._pending:
            job.deliver(Event(job.index, error="server is shutting down"))

    def _drop_cancelled_pending(self) -> None:
        if any(job.cancelled for job in self._pending):
            self._pending = deque(job for job in self._pending if not job.cancelled)

    def _forward(self, adapters: list[int], **inputs) -> torch.Tensor:
        if self.models.stack is not None:
            self.models.stack.select(adapters)
        return self.backbone.model(**inputs, use_cache=True).logits

    def _admit(self, jobs: list[Job]) -> None:
        """Prefill the new jobs, then add them to the batch (or finish those that ask for no tokens).

        Jobs that score their prompt (`echo` with log-probs) are prefilled alone, for their
        prompt log-probs; the others in groups of similar length, left-padded like the decode
        batch, so that at most `PREFILL_PADDING` of a group's tokens are padding."""
        jobs = [job for job in jobs if not job.cancelled]
        groups = [[job] for job in jobs if job.sampling.score_prompt]
        together = sorted((job for job in jobs if not job.sampling.score_prompt), key=self._context_length)
        for job in together:  # groups of similar lengths: padding would cost as much as real tokens
            length = self._context_length(job)
            if groups and groups[-1][0] in together:
                group = groups[-1]
                padding = length * (len(group) + 1) - sum(map(self._context_length, group)) - length
                if padding <= PREFILL_PADDING * length * (len(group) + 1):
                    group.append(job)
                    continue
            groups.append([job])
        for group in groups:
            self._prefill(group)

    @staticmethod
    def _context_length(job: Job) -> int:
        return len(job.prefix) + len(job.prompt)

    def _prefill(self, jobs: list[Job]) -> None:
        contexts = [job.prefix + job.prompt for job in jobs]
        width = max(len(c) for c in contexts)
        mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in contexts], device=self.device)
        ids = torch.tensor([[0] * (width - len(c)) + c for c in contexts], device=self.device)
        score = jobs[0].sampling.score_prompt
        cache = DynamicCache(config=self.backbone.model.config)
        padded = len(jobs) > 1
        logits = self._forward(
            [job.adapter for job in jobs],
            input_ids=ids,
            attention_mask=mask if padded else None,
            position_ids=(mask.cumsum(dim=1) - 1).clamp(min=0) if padded else None,
            past_key_values=cache,
            logits_to_keep=0 if score else 1,
        )
        rows: list[_Row] = []
        keep: list[int] = []
        for i, (job, context) in enumerate(zip(jobs, contexts)):
            result = Generated("", [], "length", len(context), 0)
            if score:
                all_logp = torch.log_softmax(logits[i].float(), dim=-1)
                result.prompt_logprobs = self.text.prompt_logprobs(job.prefix, job.prompt, all_logp, job.sampling.top_k)
            if job.sampling.max_tokens == 0:
                job.deliver(Event(job.index, done=result))
                continue
            generator = torch.Generator()
            if job.sampling.seed is None:
                generator.seed()
            else:
                generator.manual_seed(job.sampling.seed)
            anchor = context[-ANCHOR_TOKENS:]
            anchor_text = self.backbone.tokenizer.decode(anchor, skip_special_tokens=True)
            logp = torch.log_softmax(logits[i, -1].float(), dim=-1)
            rows.append(_Row(job, generator, len(context), logp, anchor, anchor_text, result))
            keep.append(i)
        if rows:
            self._join(rows, cache, mask, keep)

    def _join(self, rows: list[_Row], cache: DynamicCache, mask: torch.Tensor, keep: list[int]) -> None:
        """Stack prefilled rows (rows `keep` of `cache` and `mask`) onto the batch, left-padding
        the shorter side."""
        if len(keep) < mask.shape[0]:
            index = torch.tensor(keep, device=self.device)
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys[index], layer.values[index]
            mask = mask[index]
        if self._cache is None:
            self._cache, self._mask, self._rows = cache, mask, rows
            return
        width = max(self._mask.shape[1], mask.shape[1])
        grow_batch, grow_new = width - self._mask.shape[1], width - mask.shape[1]
        for batch_layer, new_layer in zip(self._cache.layers, cache.layers):
            batch_layer.keys = torch.cat([_pad_left(batch_layer.keys, grow_batch, 2), _pad_left(new_layer.keys, grow_new, 2)])
            batch_layer.values = torch.cat(
                [_pad_left(batch_layer.values, grow_batch, 2), _pad_left(new_layer.values, grow_new, 2)]
            )
        self._mask = torch.cat([_pad_left(self._mask, grow_batch, 1), _pad_left(mask, grow_new, 1)])
        self._rows.extend(rows)

    def _keep(self, keep: list[int]) -> None:
        """Keep only these rows of the batch, and drop cache columns that are padding in all of them."""
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(keep, device=self.device)
        mask = self._mask[index]
        start = int((mask.sum(dim=0) > 0).nonzero()[0])
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]
        self._mask = mask[:, start:]
        self._rows = [self._rows[i] for i in keep]

    def _step(self) -> None:
        """Choose every row's next token, retire finished or cancelled rows, feed the rest once."""
        keep: list[int] = []
        for i, row in enumerate(self._rows):
            if row.job.cancelled:
                continue
            token = self._choose(row)
            if not self._advance(row, token):
                keep.append(i)
        self._keep(keep)
        if not self._rows:
            return
        tokens = torch.tensor([[row.new[-1]] for row in self._rows], device=self.device)
        mask = torch.cat([self._mask, torch.ones(len(self._rows), 1, dtype=torch.long, device=self.device)], dim=1)
        positions = torch.tensor([[row.length] for row in self._rows], device=self.device)
        logits = self._forward(
            [row.job.adapter for row in self._rows],
            input_ids=tokens,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=self._cache,
        )
        self._mask = mask
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)
        for row, row_logp in zip(self._rows, logp):
            row.length += 1
            row.logp = row_logp
        self.steps += 1

    @staticmethod
    def _choose(row: _Row) -> int:
        sampling, logp = row.job.sampling, row.logp
        if sampling.temperature == 0:
            return int(torch.argmax(logp))
        # in float64 and shifted so that the best token scores 0: a tiny temperature can neither
        # round to 0 nor push every score to -inf (NaN probabilities)
        logp = logp.double().cpu()
        probs = torch.softmax((logp - logp.max()) / sampling.temperature, dim=-1)
        if sampling.top_p < 1:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, 0) - sorted_probs < sampling.top_p
            probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=row.generator))

    def _advance(self, row: _Row, token: int) -> bool:
        """Record `token` for `row` (text, log-probs, stop checks); True when the row is finished."""
        sampling, result = row.job.sampling, row.result
        result.token_ids.append(token)
        if token in self.eos_ids:
            result.finish_reason = "stop"
            return self._finish(row)
        anchor = row.new[-1] if row.new else (row.anchor[-1] if row.anchor else None)
        row.new.append(token)
        result.completion_tokens = len(row.new)
        text = self.text.continuation(row.anchor, row.anchor_text, row.new)
        top = self.text.top(row.logp, anchor, sampling.top_k) if sampling.top_k else None
        result.tokens.append(TokenLogprob(self.text.piece(anchor, token), float(row.logp[token]), top, len(result.text)))
        longest_stop = max((len(s) for s in sampling.stop), default=0)
        search_from = max(0, len(result.text) - longest_stop)
        result.text = text
        cut = min((i for s in sampling.stop if (i := text.find(s, search_from)) >= 0), default=-1)
        if cut >= 0:
            result.text = text[:cut]
            result.tokens = [t for t in result.tokens if t.offset < cut]
            result.finish_reason = "stop"
            return self._finish(row)
        if len(row.new) >= sampling.max_tokens:
            return self._finish(row)
        if row.job.stream:
            self._send(row, final=False)
        return False

    def _finish(self, row: _Row) -> bool:
        if row.job.stream:
            self._send(row, final=True)
        else:
            row.job.deliver(Event(row.job.index, done=row.result))
        return True

    def _send(self, row: _Row, final: bool) -> None:
        """Stream the text that can no longer change: a possible start of a stop string and an
        incomplete UTF-8 character (decoded as U+FFFD) are held back until the next token."""
        text = row.result.text
        safe = len(text)
        if not final:
            safe -= max((len(s) for s in row.job.sampling.stop), default=1) - 1
            while safe > row.sent_chars and text[safe - 1] == "\ufffd":
                safe -= 1
        tokens = [t for t in row.result.tokens[row.sent_tokens :] if final or t.offset < safe]
        if safe <= row.sent_chars and not tokens and not final:
            return
        delta = text[row.sent_chars : max(safe, row.sent_chars)]
        row.sent_chars = max(safe, row.sent_chars)
        row.sent_tokens += len(tokens)
        row.job.deliver(Event(row.job.index, delta, tokens, done=row.result if final else None))
