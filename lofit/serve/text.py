"""Token ids → the text OpenAI clients see: per-token pieces, top-k alternatives, completion text.

All of it runs in the engine's decode thread, never on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# the last prompt tokens a completion is decoded after, so that a SentencePiece tokenizer keeps
# the leading space of the first new token (decoding it alone drops it) without re-decoding a
# whole (possibly huge) prompt at every step
ANCHOR_TOKENS = 4


@dataclass
class TokenLogprob:
    """One token of a completion (or of an echoed prompt) with its log-prob and alternatives."""

    token: str
    logprob: float | None
    top: dict[str, float] | None
    offset: int


@dataclass
class Generated:
    """The finished result of one prompt."""

    text: str
    tokens: list[TokenLogprob]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)  # every generated id, EOS and stop string included


class TokenText:
    """Decodes tokens in context for one tokenizer."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._single: dict[int, str] = {}

    def single(self, token: int) -> str:
        text = self._single.get(token)
        if text is None:
            text = self._single[token] = self.tokenizer.decode([token])
        return text

    def piece(self, anchor: int | None, token: int) -> str:
        """A token's text in context: decoding it after its predecessor keeps a leading space that
        SentencePiece tokenizers drop when a token is decoded alone."""
        if anchor is None:
            return self.single(token)
        head = self.single(anchor)
        both = self.tokenizer.decode([anchor, token])
        return both[len(head) :] if both.startswith(head) else self.single(token)

    def top(self, logp: torch.Tensor, anchor: int | None, k: int) -> dict[str, float]:
        values, ids = torch.topk(logp, k)
        top: dict[str, float] = {}
        for value, token in zip(values.tolist(), ids.tolist()):
            top.setdefault(self.piece(anchor, token), value)
        return top

    def continuation(self, anchor: list[int], anchor_text: str, new: list[int]) -> str:
        """The text of `new` as it reads after the `anchor` tokens (whose text is `anchor_text`)."""
        full = self.tokenizer.decode(anchor + new, skip_special_tokens=True)
        return full[len(anchor_text) :] if full.startswith(anchor_text) else self.tokenizer.decode(new, skip_special_tokens=True)

    def prompt_logprobs(self, prefix: list[int], prompt: list[int], logp: torch.Tensor, top_k: int | None) -> list[TokenLogprob]:
        """Log-prob of each prompt token given the ones before it (None for a first token with no
        BOS); `logp` holds the log-softmax of every position of `prefix + prompt`."""
        context = prefix + prompt
        entries: list[TokenLogprob] = []
        for i, token in enumerate(prompt):
            position = len(prefix) + i
            anchor = context[position - 1] if position > 0 else None
            offset = len(self.tokenizer.decode(prompt[:i])) if i else 0
            if position == 0:
                entries.append(TokenLogprob(self.piece(None, token), None, None, offset))
                continue
            row = logp[position - 1]
            top = self.top(row, anchor, top_k) if top_k else None
            entries.append(TokenLogprob(self.piece(anchor, token), float(row[token]), top, offset))
        return entries
