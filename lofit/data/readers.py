"""Read raw task files through Hugging Face `datasets`, with schema checks whose errors name the
file, row/line and field.

Every file is loaded with `datasets.load_dataset("csv" | "json", data_files=..., split="train")`
into an Arrow cache under `datasets_cache()/<sha256 of the file>`: keyed by content, so a changed
file is parsed again even when its mtime was kept (`cp -p`, `rsync -a`, `tar x`); `datasets` keys
on path + mtime alone. CSV cells are read as their exact strings: string `Features`, no NA
conversion, no type inference.

pandas and Arrow are lenient where the `csv`/`json` modules are exact: pandas pads short rows,
turns an extra first field into an index and drops a BOM; Arrow adds `None` for keys absent from
some records and turns the ints of a mixed int/float column into floats. So the plain scanners
below stay the reference. The first load of a file runs both and marks its cache as verified
when the rows are identical; later loads read the verified cache alone, and a file whose Arrow
form differs from the reference (or that pandas/Arrow reject) is always scanned. The scanners
also raise the precise errors; a verified cache that fails a caller's schema check is rescanned
so the error names the line. An empty, non-UTF-8 or unreadable CSV file is a `RawDataError` too.

`datasets` is imported only when a file is loaded, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from lofit.data.sources import sha256_of
from lofit.io import cache_root

if TYPE_CHECKING:
    from datasets import Dataset

DATASETS_CACHE_ENV = "LOFIT_DATASETS_CACHE"
VERIFIED_MARKER = "lofit-verified"

logger = logging.getLogger(__name__)
Row = TypeVar("Row")


class RawDataError(ValueError):
    """A raw file is missing, empty or malformed; the message names the file and the place."""


def datasets_cache() -> Path:
    """Arrow cache of the raw files: `$LOFIT_DATASETS_CACHE`, default `<LOFIT_CACHE>/datasets`."""
    return Path(os.environ.get(DATASETS_CACHE_ENV) or cache_root() / "datasets")


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise RawDataError(f"{path}: file not found; run `python pipelines/prepare_data.py` to place the raw data")
    if path.stat().st_size == 0:
        raise RawDataError(f"{path}: empty file")


def _scanned(path: Path, scan: Callable[[], list[Row]]) -> list[Row]:
    """`scan()`, with the decoding and CSV errors that name nothing turned into ones naming the file."""
    try:
        return scan()
    except UnicodeDecodeError:
        raise RawDataError(f"{path}: not UTF-8 text ({_first_undecodable(path)})") from None
    except csv.Error as err:
        raise RawDataError(f"{path}: malformed CSV ({err})") from None


def _first_undecodable(path: Path) -> str:
    """Where the file stops being UTF-8 (a streaming decoder's offset is relative to its chunk)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        return f"line {line}, byte offset {err.start}: {err.reason}"
    return "it changed while being read"


def read_text_file(path: str | Path) -> str:
    """A whole UTF-8 text file (a prompt file); missing, empty and undecodable files name the path."""
    path = Path(path)
    _require_file(path)
    text = _scanned(path, lambda: path.read_text(encoding="utf-8"))
    if not text.strip():
        raise RawDataError(f"{path}: empty file")
    return text


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


def _load(builder: str, path: Path, **config: object) -> Dataset:
    import datasets
    import datasets.config

    # Otherwise every `load_dataset` of a packaged builder sends a HEAD request to the Hub's S3
    # bucket to count downloads: telemetry, and seconds per local file when DNS is slow or absent.
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    cache_dir = datasets_cache() / sha256_of(path)  # the verified marker lives inside it: per content too
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # a task reads all its files when built: one bar per file is noise
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=str(cache_dir), **config)
    finally:
        if bars:
            datasets.enable_progress_bars()


def _to_list(dataset: Dataset) -> list:
    return dataset.to_list()


def _load_strings(path: Path, columns: Sequence[str], **pandas_options: object) -> Dataset:
    """A CSV whose cells stay the strings of the file, empty ones included."""
    from datasets import Features, Value

    features = Features({name: Value("string") for name in columns})
    return _load("csv", path, features=features, keep_default_na=False, na_filter=False, **pandas_options)


def _cached(
    path: Path,
    load: Callable[[], Dataset],
    to_rows: Callable[[Dataset], list[Row]],
    scan: Callable[[], list[Row]],
    valid: Callable[[list[Row]], bool],
) -> list[Row]:
    """`load()`'s rows once its cache is verified against `scan()` (the reference), else `scan()`'s.

    `valid` is the caller's schema check on cached rows; when it fails, the scan names the place.
    """
    _require_file(path)
    try:
        dataset = load()
        marker = Path(dataset.cache_files[0]["filename"]).parent / VERIFIED_MARKER
        rows = to_rows(dataset)
    except Exception as err:  # pandas, pyarrow and datasets raise many types; the scan tells what is wrong
        logger.debug("datasets could not load %s (%s); scanning it", path, err)
        return _scanned(path, scan)
    if marker.is_file() and valid(rows):
        return rows
    reference = _scanned(path, scan)
    if repr(rows) == repr(reference):  # not `==`: 1 == 1.0 and True == 1
        with contextlib.suppress(OSError):  # a read-only cache just stays unverified
            marker.touch()
    return reference


def _scan_csv_records(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
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


def read_csv_records(path: str | Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a headed CSV as dicts; every required column must exist and be non-empty."""
    path = Path(path)

    def load() -> Dataset:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            columns = next(csv.reader(handle), [])  # the header names the string features
        return _load_strings(path, columns, encoding="utf-8-sig")

    def valid(rows: list[dict[str, str]]) -> bool:
        return all((row.get(name) or "").strip() for row in rows for name in required)

    return _cached(path, load, _to_list, lambda: _scan_csv_records(path, required), valid)


def _scan_headerless_csv(path: Path, num_fields: int) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        rows = []
        for row in reader:
            if len(row) != num_fields:
                raise RawDataError(f"{path}: row ending at line {reader.line_num}: {len(row)} fields, expected {num_fields}")
            rows.append(row)
    return _require_rows(path, rows)


def read_headerless_csv(path: str | Path, num_fields: int) -> list[list[str]]:
    """Rows of a CSV without header, each with exactly `num_fields` fields (MMLU's format)."""
    path = Path(path)
    names = [str(number) for number in range(num_fields)]
    return _cached(
        path,
        lambda: _load_strings(path, names, header=None, column_names=names, encoding="utf-8"),
        lambda dataset: [list(row.values()) for row in dataset.to_list()],
        lambda: _scan_headerless_csv(path, num_fields),
        lambda rows: True,  # the field count is part of the cached schema
    )


def _has_keys(records: list[dict], required: Sequence[str]) -> bool:
    return all(key in record for record in records for key in required)


def _scan_jsonl_records(path: Path, required: Sequence[str]) -> list[dict]:
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


def read_jsonl_records(path: str | Path, required: Sequence[str]) -> list[dict]:
    """Objects of a JSON-lines file; a bad line or a missing key names the line number."""
    path = Path(path)
    return _cached(
        path,
        lambda: _load("json", path),
        _to_list,
        lambda: _scan_jsonl_records(path, required),
        lambda records: _has_keys(records, required),
    )


def _scan_json_records(path: Path, required: Sequence[str]) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RawDataError(f"{path}: invalid JSON at line {err.lineno} column {err.colno} ({err.msg})") from None
    if not isinstance(data, list):
        raise RawDataError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    return _require_rows(path, [_check_keys(path, f"item {index}", item, required) for index, item in enumerate(data)])


def read_json_records(path: str | Path, required: Sequence[str]) -> list[dict]:
    """Objects of a file holding one JSON list; a missing key names the list index."""
    path = Path(path)
    return _cached(
        path,
        lambda: _load("json", path),
        _to_list,
        lambda: _scan_json_records(path, required),
        lambda records: _has_keys(records, required),
    )


def read_parquet_records(path: str | Path, required: Sequence[str]) -> list[dict]:
    """Rows of a Parquet file (through the Arrow cache); a missing column names the file."""
    path = Path(path)
    _require_file(path)
    try:
        rows = _to_list(_load("parquet", path))
    except Exception as err:  # pyarrow raises several unrelated types for a non-Parquet file
        raise RawDataError(f"{path}: not a readable Parquet file ({type(err).__name__}: {err})") from None
    for index, row in enumerate(rows, start=1):
        _check_keys(path, f"row {index}", row, required)
    return _require_rows(path, rows)
