"""Read raw task files with schema checks whose errors name the file, row/line and field.

Plain `csv`/`json` rather than `datasets`: the files are small, and a loader that fails with a
pointer to the exact bad line is worth more here than caching.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path


class RawDataError(ValueError):
    """A raw file is missing, empty or malformed; the message names the file and the place."""


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise RawDataError(f"{path}: file not found; run `python pipelines/prepare_data.py` to place the raw data")


def _check_keys(path: Path, where: str, record: object, required: Sequence[str]) -> dict:
    if not isinstance(record, dict):
        raise RawDataError(f"{path}: {where}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in required if key not in record]
    if missing:
        raise RawDataError(f"{path}: {where}: missing field(s) {missing}")
    return record


def _require_rows(path: Path, rows: list) -> list:
    if not rows:
        raise RawDataError(f"{path}: empty split (no rows)")
    return rows


def read_csv_records(path: str | Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a headed CSV as dicts; every required column must exist and be non-empty."""
    path = Path(path)
    _require_file(path)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [name for name in required if name not in columns]
        if missing:
            raise RawDataError(f"{path}: missing column(s) {missing}; found {columns}")
        rows = []
        for row in reader:
            row_number = reader.line_num
            empty = [name for name in required if not (row.get(name) or "").strip()]
            if empty:
                raise RawDataError(f"{path}: row ending at line {row_number}: empty field(s) {empty}")
            rows.append(row)
    return _require_rows(path, rows)


def read_headerless_csv(path: str | Path, num_fields: int) -> list[list[str]]:
    """Rows of a CSV without header, each with exactly `num_fields` fields (MMLU's format)."""
    path = Path(path)
    _require_file(path)
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        rows = []
        for row in reader:
            if len(row) != num_fields:
                raise RawDataError(f"{path}: row ending at line {reader.line_num}: {len(row)} fields, expected {num_fields}")
            rows.append(row)
    return _require_rows(path, rows)


def read_jsonl_records(path: str | Path, required: Sequence[str]) -> list[dict]:
    """Objects of a JSON-lines file; a bad line or a missing key names the line number."""
    path = Path(path)
    _require_file(path)
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise RawDataError(f"{path}: line {line_number}: invalid JSON ({err.msg})") from None
            records.append(_check_keys(path, f"line {line_number}", record, required))
    return _require_rows(path, records)


def read_json_records(path: str | Path, required: Sequence[str]) -> list[dict]:
    """Objects of a file holding one JSON list; a missing key names the list index."""
    path = Path(path)
    _require_file(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RawDataError(f"{path}: invalid JSON at line {err.lineno} column {err.colno} ({err.msg})") from None
    if not isinstance(data, list):
        raise RawDataError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    return _require_rows(path, [_check_keys(path, f"item {index}", item, required) for index, item in enumerate(data)])
