"""Prompt templates over a row's columns: Python format fields, checked before any row is used.

A template such as `"Q: {question} A:"` names the columns it reads; `template_fields` lists them
so a task can reject a template naming a column its file lacks (one line naming the file and the
field) instead of failing with a KeyError in the middle of training.
"""

from __future__ import annotations

import string
from collections.abc import Mapping


def template_fields(template: str) -> list[str]:
    """Column names the template reads (`{a.b}` and `{a[0]}` read column `a`), in order, no repeats."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"template {template!r} is not a valid format string ({err})") from None
    fields: list[str] = []
    for _, field, _, _ in parsed:
        if field is None:
            continue
        name = field.split(".")[0].split("[")[0]
        if not name or name.isdigit():
            raise ValueError(f"template {template!r}: every field must name a column, got {{{field}}}")
        if name not in fields:
            fields.append(name)
    return fields


def render(template: str, row: Mapping[str, object]) -> str:
    """The template filled with the row's values (fields were checked with `template_fields`)."""
    return template.format_map(row)
