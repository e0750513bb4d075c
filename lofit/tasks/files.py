"""A task made of the user's own files: rows → prompt template → SFT or DPO examples → an evaluator.

Configured entirely by options (`--task.name files --task.options {...}`), so bringing one's own
data needs no Python. Sources are local JSONL/JSON/CSV/Parquet files or Hub dataset ids (with a
pinned `revision`), all read through `datasets.load_dataset`; either one source per split, or one
`source` cut into train/val/test by a seeded shuffle. Every row is checked when the task is built
(`read_all`), so a missing column, an empty split, a template naming an unknown field, a choice
index out of range or an empty DPO side fails in one line naming the file, row and field before
any model loads.

Every summary carries `score`, the evaluator's higher-is-better headline (exact match, choice
accuracy, or exp(-loss) for `loss`), so reports can read one metric name for every `files` run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from lofit.data.examples import SPLITS, ContrastQuestion, PreferenceExample, SFTExample, Split
from lofit.data.readers import RawDataError, read_csv_records, read_json_records, read_jsonl_records, read_parquet_records
from lofit.data.templates import render, template_fields
from lofit.errors import ConfigError
from lofit.evaluation import first
from lofit.tasks.base import GenerationPrompts, Task

if TYPE_CHECKING:
    from lofit.backbone import Backbone

T = TypeVar("T")
Kind = Literal["sft", "dpo"]
Evaluation = Literal["exact_match", "multiple_choice", "loss"]
KINDS: tuple[str, ...] = ("sft", "dpo")
EVALUATIONS: tuple[str, ...] = ("exact_match", "multiple_choice", "loss")
DEFAULT_COLUMNS = {"answer": "answer", "chosen": "chosen", "rejected": "rejected", "choices": "choices", "label": "label"}
READERS = {".jsonl": read_jsonl_records, ".json": read_json_records, ".csv": read_csv_records, ".parquet": read_parquet_records}


@dataclass(frozen=True)
class Row:
    """One checked row: its prompt and what the kind and evaluator need (unused parts empty)."""

    prompt: str
    answers: tuple[str, ...] = ()  # accepted answers; the first is the SFT completion
    chosen: str = ""
    rejected: str = ""
    choices: tuple[str, ...] = ()
    gold: int = 0


def _source_spec(split: str, source: str | Mapping[str, Any]) -> dict[str, Any]:
    """A source as {path, revision, name, split}; a bare string is a local file or a Hub id."""
    spec = {"path": source} if isinstance(source, str) else dict(source)
    unknown = set(spec) - {"path", "revision", "name", "split"}
    if "path" not in spec or unknown:
        raise ValueError(f"task.options.{split}: a source is a path or {{path, revision, name, split}}, got {source!r}")
    return spec


def _read_source(spec: Mapping[str, Any], required: Sequence[str]) -> tuple[str, list[dict]]:
    """(label naming the source, its rows): a local file by suffix, else a Hub dataset id."""
    path = Path(spec["path"])
    reader = READERS.get(path.suffix.lower())
    if reader is not None:
        return str(path), reader(path, required)
    if path.exists():
        raise RawDataError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(READERS)}")
    import datasets

    label = f"{spec['path']}@{spec.get('revision') or 'default'}"
    try:
        dataset = datasets.load_dataset(
            spec["path"], spec.get("name"), split=spec.get("split", "train"), revision=spec.get("revision")
        )
    except Exception as err:  # the Hub client raises many types (offline, not found, gated)
        raise RawDataError(f"{label}: cannot load dataset ({type(err).__name__}: {err})") from None
    missing = [column for column in required if column not in dataset.column_names]
    if missing:
        raise RawDataError(f"{label}: missing column(s) {missing}")
    return label, dataset.to_list()


def _split_count(name: str, size: int | float, total: int) -> int:
    if isinstance(size, float) and 0 < size < 1:
        return round(size * total)
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    raise ValueError(f"task.options.split_sizes.{name}: a fraction in (0, 1) or a row count, got {size!r}")


def seeded_split(rows: Sequence[T], sizes: Mapping[str, int | float], seed: int) -> dict[str, list[T]]:
    """val/test take their sizes from a seeded shuffle (file order within each part); train the rest."""
    unknown = set(sizes) - {"val", "test"}
    if unknown:
        raise ValueError(f"task.options.split_sizes: only val and test are sized (train is the rest), got {sorted(unknown)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    parts: dict[str, list[int]] = {}
    start = 0
    for name in ("val", "test"):
        count = _split_count(name, sizes.get(name, 0), len(rows))
        parts[name] = order[start : start + count]
        start += count
    parts["train"] = order[start:]
    return {name: [rows[i] for i in sorted(indices)] for name, indices in parts.items()}


def _text(label: str, number: int, column: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RawDataError(f"{label}: row {number}: field '{column}' must be a non-empty string, got {value!r}")
    return value


def _answers(label: str, number: int, column: str, value: object) -> tuple[str, ...]:
    """One accepted answer (a string) or several (a non-empty list of strings)."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise RawDataError(f"{label}: row {number}: field '{column}' is an empty list of answers")
    return tuple(_text(label, number, column, item) for item in values)


def _gold(label: str, number: int, column: str, value: object, num_choices: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < num_choices:
        raise RawDataError(f"{label}: row {number}: field '{column}' = {value!r} is not a choice index in 0..{num_choices - 1}")
    return value


def first_line(prompt: str, continuation: str, take_first_line: bool) -> str:
    """The prediction: the continuation, or (asked) its first non-empty line; only leading
    whitespace goes here (`strip` is the normaliser's), so a line that has ended never changes."""
    return continuation.lstrip().split("\n")[0] if take_first_line else continuation


def normalized(text: str, lower: bool, strip: bool) -> str:
    text = text.strip() if strip else text
    return text.lower() if lower else text


def _with_score(out_dir: str | Path | None, summary: dict[str, float], score: float) -> dict[str, float]:
    """The summary with `score` added, rewritten where the evaluator already wrote it."""
    from lofit.evaluation import SUMMARY_FILE
    from lofit.io import write_json

    summary = {**summary, "score": score}
    if out_dir is not None:
        write_json(Path(out_dir) / SUMMARY_FILE, summary)
    return summary


class Files(Task):
    """Rows of the user's files as a task.

    Args (task options):
        kind: `sft` (prompt → answer) or `dpo` (prompt, chosen, rejected).
        template: the prompt, with `{column}` fields filled from each row (e.g. "Q: {question} A:").
        train / val / test: one source per split: a local .jsonl/.json/.csv/.parquet path or a Hub id,
            or a mapping {path, revision, name, split}.
        source: instead, one source cut into splits by `split_sizes` (val/test fraction or count) and `seed`.
        columns: the row's column for each role (defaults: answer, chosen, rejected, choices, label);
            `answer` may hold one string or a list of accepted answers.
        separator: text between the prompt and each answer, choice or DPO side (default a space).
        evaluation: `exact_match`, `multiple_choice` (choices column + label index; DPO rows score
            chosen against rejected) or `loss` (mean answer-token loss).
        lower / strip / first_line: exact-match normalisation and answer parsing.
        max_new_tokens: generation budget for exact match.
    """

    name = "files"
    loss = "sft"
    primary_metric = "score"

    def __init__(
        self,
        data_dir: str | Path = "data/raw",
        kind: Kind = "sft",
        template: str = "{prompt}",
        train: str | dict | None = None,
        val: str | dict | None = None,
        test: str | dict | None = None,
        source: str | dict | None = None,
        split_sizes: dict[str, int | float] | None = None,
        seed: int = 0,
        columns: dict[str, str] | None = None,
        separator: str = " ",
        evaluation: Evaluation = "exact_match",
        lower: bool = True,
        strip: bool = True,
        first_line: bool = True,
        max_new_tokens: int = 16,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"task.options.kind must be one of {KINDS}, got {kind!r}")
        if evaluation not in EVALUATIONS:
            raise ValueError(f"task.options.evaluation must be one of {EVALUATIONS}, got {evaluation!r}")
        unknown = set(columns or {}) - set(DEFAULT_COLUMNS)
        if unknown:
            raise ValueError(f"task.options.columns: unknown role(s) {sorted(unknown)}; roles: {', '.join(DEFAULT_COLUMNS)}")
        per_split = {"train": train, "val": val, "test": test}
        if (source is None) == all(value is None for value in per_split.values()):
            raise ValueError("task.options: give either `source` (with split_sizes) or train, val and test sources")
        if source is None and any(value is None for value in per_split.values()):
            missing = [name for name, value in per_split.items() if value is None]
            raise ValueError(f"task.options: missing source for split(s) {missing}")
        if max_new_tokens <= 0:
            raise ValueError(f"task.options.max_new_tokens must be positive, got {max_new_tokens}")
        self.loss = kind
        self.kind, self.template, self.evaluation, self.separator = kind, template, evaluation, separator
        self.columns = {**DEFAULT_COLUMNS, **(columns or {})}
        self.sources = {name: _source_spec(name, value) for name, value in per_split.items() if value is not None}
        self.source = None if source is None else _source_spec("source", source)
        self.split_sizes, self.seed = dict(split_sizes or {}), seed
        self.lower, self.strip, self.first_line, self.max_new_tokens = lower, strip, first_line, max_new_tokens
        self.fields = template_fields(template)
        self._rows: dict[str, list[Row]] = {}

    # --- reading and checking ------------------------------------------------------------------

    def _roles(self) -> list[str]:
        """The roles this kind and evaluator read from every row."""
        if self.kind == "dpo":
            return ["chosen", "rejected"]
        return ["choices", "label"] if self.evaluation == "multiple_choice" else ["answer"]

    def role_columns(self) -> list[str]:
        return list(dict.fromkeys(self.columns[role] for role in self._roles()))

    def local_files(self) -> list[Path]:
        """The local files among the sources (the data deps of a pipeline run)."""
        specs = [self.source] if self.source else list(self.sources.values())
        return [Path(spec["path"]) for spec in specs if Path(spec["path"]).suffix.lower() in READERS]

    def read_all(self) -> None:
        required = self.role_columns()
        if self.source is not None:
            label, records = _read_source(self.source, required)
            parts = seeded_split(list(enumerate(records, start=1)), self.split_sizes, self.seed)
            numbered = {name: (label, rows) for name, rows in parts.items()}
        else:
            numbered = {}
            for name, spec in self.sources.items():
                label, records = _read_source(spec, required)
                numbered[name] = (label, list(enumerate(records, start=1)))
        for split in SPLITS:
            label, rows = numbered[split]
            if not rows:
                raise RawDataError(f"{label}: empty {split} split (no rows)")
            self._rows[split] = [self._row(label, number, record) for number, record in rows]

    def _row(self, label: str, number: int, record: Mapping[str, Any]) -> Row:
        missing = [column for column in self.role_columns() if column not in record]
        if missing:
            raise RawDataError(f"{label}: row {number}: missing field(s) {missing}")
        unknown = [field for field in self.fields if field not in record]
        if unknown:
            raise RawDataError(f"{label}: row {number}: template field(s) {unknown} name no column of the row")
        try:
            prompt = render(self.template, record)
        except (KeyError, IndexError, AttributeError, ValueError) as err:
            raise RawDataError(f"{label}: row {number}: template {self.template!r} cannot be filled ({err})") from None
        column = self.columns
        if self.kind == "dpo":
            return Row(
                prompt,
                chosen=_text(label, number, column["chosen"], record[column["chosen"]]),
                rejected=_text(label, number, column["rejected"], record[column["rejected"]]),
            )
        if self.evaluation == "multiple_choice":
            choices = _answers(label, number, column["choices"], record[column["choices"]])
            if len(choices) < 2:
                raise RawDataError(f"{label}: row {number}: field '{column['choices']}' needs at least 2 choices")
            gold = _gold(label, number, column["label"], record[column["label"]], len(choices))
            return Row(prompt, answers=(choices[gold],), choices=choices, gold=gold)
        return Row(prompt, answers=_answers(label, number, column["answer"], record[column["answer"]]))

    def rows(self, split: Split) -> list[Row]:
        if not self._rows:
            self.read_all()
        return self._rows[split]

    # --- training examples ---------------------------------------------------------------------

    def examples(self, split: Split) -> list[SFTExample] | list[PreferenceExample]:
        """prompt + separator + answer; DPO pairs get the separator before each side."""
        sep = self.separator
        if self.kind == "dpo":
            return [PreferenceExample(r.prompt, sep + r.chosen, sep + r.rejected) for r in self.rows(split)]
        return [SFTExample(r.prompt, sep + r.answers[0]) for r in self.rows(split)]

    def contrasts(self, split: Split) -> list[ContrastQuestion]:
        """ITI/RepE statements: the rendered template + separator + answer (the text this task trains
        and scores); true = chosen, false = rejected (dpo), or the gold choice against the others
        (multiple_choice)."""
        if self.kind == "dpo":
            return [ContrastQuestion(r.prompt, (r.chosen,), (r.rejected,), self.separator) for r in self.rows(split)]
        if self.evaluation == "multiple_choice":
            return [
                ContrastQuestion(r.prompt, (r.choices[r.gold],), r.choices[: r.gold] + r.choices[r.gold + 1 :], self.separator)
                for r in self.rows(split)
            ]
        raise ConfigError(
            f"task 'files' (kind: {self.kind}, evaluation: {self.evaluation}) has no true/false answers: "
            "ITI/RepE need kind: dpo or evaluation: multiple_choice"
        )

    # --- evaluation ----------------------------------------------------------------------------

    def evaluate(
        self,
        backbone: Backbone,
        split: Split = "test",
        out_dir: str | Path | None = None,
        limit: int | None = None,
        batch_size: int = 16,
    ) -> dict[str, float]:
        rows = first(self.rows(split), limit)
        if self.evaluation == "exact_match":
            summary = self._exact_match(backbone, rows, out_dir, batch_size)
            return _with_score(out_dir, summary, summary["exact_match"])
        if self.evaluation == "multiple_choice":
            return self._multiple_choice(backbone, rows, out_dir, batch_size)
        return self._loss(backbone, rows, out_dir, batch_size)

    def _exact_match(self, backbone: Backbone, rows: Sequence[Row], out_dir, batch_size: int) -> dict[str, float]:
        from lofit.evaluation.exact_match import GenerationItem, evaluate_exact_match

        targets = [(r.chosen,) if self.kind == "dpo" else r.answers for r in rows]
        items = [GenerationItem(r.prompt, answers) for r, answers in zip(rows, targets)]
        normalize = partial(normalized, lower=self.lower, strip=self.strip)
        return evaluate_exact_match(backbone, items, self.answer_parser(), normalize, out_dir, batch_size, self.max_new_tokens)

    def generation_prompts(self, split: Split) -> GenerationPrompts:
        """The rendered prompts, generated after as exact match does (max_new_tokens, first_line stop)."""
        return GenerationPrompts([r.prompt for r in self.rows(split)], self.max_new_tokens, self.answer_parser().is_final)

    def answer_parser(self):
        """The exact-match parser; the first line is final once a line break follows text (so
        generation may stop there), the whole continuation never is."""
        from lofit.evaluation.exact_match import AnswerParser, line_ended

        return AnswerParser(partial(first_line, take_first_line=self.first_line), line_ended if self.first_line else None)

    def _multiple_choice(self, backbone: Backbone, rows: Sequence[Row], out_dir, batch_size: int) -> dict[str, float]:
        """Log-likelihood of separator + choice after the prompt, as MC1 scores answers."""
        from lofit.evaluation import check_batch_size, check_examples, write_results
        from lofit.evaluation.multiple_choice import argmax, score_continuations, shared_prefix_of

        check_examples(rows, "questions")
        check_batch_size(batch_size)
        shared = shared_prefix_of(backbone, [r.prompt for r in rows])
        results = []
        for r in rows:
            choices, gold = ((r.chosen, r.rejected), 0) if self.kind == "dpo" else (r.choices, r.gold)
            scores = score_continuations(backbone, r.prompt, [self.separator + c for c in choices], batch_size=batch_size, shared=shared)
            top = max(scores)
            weights = [math.exp(s - top) for s in scores]
            predicted = argmax(scores)
            results.append(
                {
                    "prompt": r.prompt,
                    "choices": list(choices),
                    "scores": scores,
                    "prediction": choices[predicted],
                    "target": choices[gold],
                    "gold_probability": weights[gold] / sum(weights),
                    "correct": predicted == gold,
                }
            )
        accuracy = sum(row["correct"] for row in results) / len(results)
        probability = sum(row["gold_probability"] for row in results) / len(results)
        summary = {"accuracy": accuracy, "gold_probability": probability, "score": accuracy, "num_examples": len(results)}
        write_results(out_dir, results, summary)
        return summary

    def _loss(self, backbone: Backbone, rows: Sequence[Row], out_dir, batch_size: int) -> dict[str, float]:
        """Mean cross-entropy per answer token (the SFT answer, or the DPO chosen side)."""
        import torch

        from lofit.data.collate import IGNORE_INDEX, PadCollator, tokenize_sft
        from lofit.evaluation import check_batch_size, check_examples, write_results

        check_examples(rows)
        check_batch_size(batch_size)
        model = backbone.model
        device = next(model.parameters()).device
        collate = PadCollator(backbone.tokenizer.pad_token_id)
        answers = [self.separator + (r.chosen if self.kind == "dpo" else r.answers[0]) for r in rows]
        results = []
        for start in range(0, len(rows), batch_size):
            features = [
                tokenize_sft(backbone, SFTExample(r.prompt, answer), index, 1 << 30)
                for index, (r, answer) in enumerate(zip(rows[start : start + batch_size], answers[start : start + batch_size]))
            ]
            batch = collate(features)
            with torch.no_grad():
                logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
            logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:].to(device)
            mask = labels != IGNORE_INDEX
            token_loss = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), labels.clamp(min=0), reduction="none"
            ) * mask
            for row_index, feature in enumerate(features):
                r = rows[start + feature["index"]]
                results.append(
                    {
                        "prompt": r.prompt,
                        "answer": answers[start + feature["index"]],
                        "loss_sum": float(token_loss[row_index].sum()),
                        "tokens": int(mask[row_index].sum()),
                    }
                )
        loss = sum(row["loss_sum"] for row in results) / sum(row["tokens"] for row in results)
        summary = {"loss": loss, "score": math.exp(-loss), "num_examples": len(results)}
        write_results(out_dir, results, summary)
        return summary
