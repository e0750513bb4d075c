"""How a task's plain prompt becomes the text an instruct model sees: as is, or in its chat template.

Every task takes two generic options, read here and nowhere else (`split_prompt_options`):
`chat_template: true` renders each prompt as one user message with `tokenizer.apply_chat_template`
(after an optional `system_prompt`) and the assistant's opening; the answer follows the rendered
text unchanged. Off (the default, as in the reference) a prompt is left exactly as the task wrote
it, so existing runs tokenize to the same ids. The backbone carries the format, so training,
evaluation and the server encode prompts in one way (`Backbone.encode_prompt`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lofit.errors import ConfigError, require

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PROMPT_OPTIONS = ("chat_template", "system_prompt")


@dataclass(frozen=True)
class PromptFormat:
    """Chat-template formatting of prompts (off by default).

    Args:
        chat_template: render each prompt with the tokenizer's chat template as a user turn.
        system_prompt: a system message placed before the user turn (needs `chat_template`).
    """

    chat_template: bool = False
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        require(isinstance(self.chat_template, bool), f"task.options.chat_template must be true or false, got {self.chat_template!r}")
        require(
            self.system_prompt is None or isinstance(self.system_prompt, str),
            f"task.options.system_prompt must be a string, got {self.system_prompt!r}",
        )
        require(
            self.system_prompt is None or self.chat_template,
            "task.options.system_prompt needs task.options.chat_template: true (a system message exists only in a chat template)",
        )

    def check(self, tokenizer: PreTrainedTokenizerBase, model: str) -> None:
        """A format that renders needs a tokenizer with a chat template (fails before any training)."""
        if self.chat_template and getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError(f"task.options.chat_template: the tokenizer of '{model}' has no chat template (use a chat/instruct model or set it false)")

    def messages(self, prompt: str) -> list[dict[str, str]]:
        """The conversation a prompt becomes: the system message (if any), then the user turn."""
        system = [] if self.system_prompt is None else [{"role": "system", "content": self.system_prompt}]
        return [*system, {"role": "user", "content": prompt}]

    def render(self, tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
        """The text the model sees for `prompt` (the prompt itself when the format is off)."""
        if not self.chat_template:
            return prompt
        return tokenizer.apply_chat_template(self.messages(prompt), tokenize=False, add_generation_prompt=True)

    def to_record(self) -> dict[str, Any] | None:
        """What an artifact stores (None when off, so files written without the format are unchanged)."""
        if not self.chat_template:
            return None
        return {"chat_template": True, "system_prompt": self.system_prompt}


def split_prompt_options(options: Mapping[str, Any]) -> tuple[PromptFormat, dict[str, Any]]:
    """The prompt format named by a task's options, and the options left for the task's constructor."""
    chosen = {name: options[name] for name in PROMPT_OPTIONS if name in options}
    rest = {name: value for name, value in options.items() if name not in PROMPT_OPTIONS}
    return PromptFormat(**chosen), rest


def prompt_format_from_record(record: Mapping[str, Any] | None, source: str) -> PromptFormat:
    """The format an artifact recorded (`to_record`); a missing record (older artifacts) is off."""
    if record is None:
        return PromptFormat()
    unknown = set(record) - set(PROMPT_OPTIONS)
    require(not unknown, f"{source}: prompt_format has unknown keys {sorted(unknown)}")
    return PromptFormat(**record)
