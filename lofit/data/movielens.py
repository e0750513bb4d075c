"""MovieLens-100K from either of its two sources, converted to one canonical table.

Sources: GroupLens' `ml-100k.zip` (`u.data`: tab-separated user, item, rating, timestamp;
`u.item`: pipe-separated, Latin-1, titles with their year, "Toy Story (1995)") and the copy RecBole
1.2.1 ships inside its wheel (`ml-100k.inter` / `ml-100k.item`: RecBole's atomic TSV with typed
headers, the title split into `movie_title` and `release_year`; the year is put back as
"Title (Year)"). Both become `ratings.tsv` (user_id, item_id, rating, timestamp; sorted by user,
timestamp, item) and `movies.tsv` (item_id, title; sorted by item). The ratings table must be
byte-identical from either source: `RATINGS_SHA256` is pinned from the wheel, and a zip whose
ratings convert to anything else is refused. The licence forbids redistribution: these files are
built locally, never mirrored or committed.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lofit.data.readers import RawDataError
from lofit.data.sources import RECBOLE_WHEEL, fetch_wheel, wheel_member
from lofit.io import atomic_path

RATINGS_FILE = "ratings.tsv"
MOVIES_FILE = "movies.tsv"
RATINGS_HEADER = ("user_id", "item_id", "rating", "timestamp")
MOVIES_HEADER = ("item_id", "title")
RECBOLE_INTER = "recbole/dataset_example/ml-100k/ml-100k.inter"
RECBOLE_ITEM = "recbole/dataset_example/ml-100k/ml-100k.item"
ZIP_DATA, ZIP_ITEM = "ml-100k/u.data", "ml-100k/u.item"
RATINGS_SHA256 = "e06ce892883eb9b0369b12385e83badfd6053c3a52a4bdee7897bba0b57e717b"  # of ratings.tsv from the wheel


@dataclass(frozen=True, order=True)
class Rating:
    """One interaction; field order is the canonical sort order within a user."""

    user: int
    timestamp: int
    item: int
    rating: int


def _int(origin: str, line: int, field: str, text: str) -> int:
    try:
        value = float(text)  # RecBole's typed headers say float; every value is integral
    except ValueError:
        raise RawDataError(f"{origin}: line {line}: {field} {text!r} is not a number") from None
    if not value.is_integer():
        raise RawDataError(f"{origin}: line {line}: {field} {text!r} is not an integer")
    return int(value)


def _rating(origin: str, line: int, user: str, item: str, rating: str, timestamp: str) -> Rating:
    score = _int(origin, line, "rating", rating)
    if not 1 <= score <= 5:
        raise RawDataError(f"{origin}: line {line}: rating {rating!r} is outside 1..5")
    return Rating(_int(origin, line, "user_id", user), _int(origin, line, "timestamp", timestamp), _int(origin, line, "item_id", item), score)


def _recbole_rows(text: str, origin: str, needed: tuple[str, ...]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header field names (types dropped) and (line number, fields) rows; needed fields checked."""
    lines = text.splitlines()
    if not lines:
        raise RawDataError(f"{origin}: empty file")
    names = [field.split(":", 1)[0] for field in lines[0].split("\t")]
    if missing := [name for name in needed if name not in names]:
        raise RawDataError(f"{origin}: header lacks column(s) {', '.join(missing)} (has {', '.join(names)})")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(names):
            raise RawDataError(f"{origin}: line {number}: {len(fields)} fields, the header has {len(names)}")
        rows.append((number, fields))
    return names, rows


def recbole_ratings(text: str, origin: str) -> list[Rating]:
    names, rows = _recbole_rows(text, origin, RATINGS_HEADER)
    at = [names.index(name) for name in RATINGS_HEADER]
    return sorted(_rating(origin, number, *(fields[i] for i in at)) for number, fields in rows)


def recbole_movies(text: str, origin: str) -> dict[int, str]:
    """item -> "Title (Year)" (just "Title" where RecBole has no year)."""
    names, rows = _recbole_rows(text, origin, ("item_id", "movie_title", "release_year"))
    item, title, year = (names.index(name) for name in ("item_id", "movie_title", "release_year"))
    return {
        _int(origin, number, "item_id", fields[item]): f"{fields[title]} ({fields[year]})" if fields[year] else fields[title]
        for number, fields in rows
    }


def udata_ratings(text: str, origin: str) -> list[Rating]:
    ratings = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) != 4:
            raise RawDataError(f"{origin}: line {number}: {len(fields)} fields, expected user, item, rating, timestamp")
        ratings.append(_rating(origin, number, *fields))
    return sorted(ratings)


def uitem_movies(text: str, origin: str) -> dict[int, str]:
    movies = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split("|")
        if len(fields) < 2:
            raise RawDataError(f"{origin}: line {number}: no title field")
        movies[_int(origin, number, "item_id", fields[0])] = fields[1]
    return movies


def ratings_tsv(ratings: list[Rating]) -> bytes:
    lines = ["\t".join(RATINGS_HEADER)] + [f"{r.user}\t{r.item}\t{r.rating}\t{r.timestamp}" for r in sorted(ratings)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def movies_tsv(movies: dict[int, str]) -> bytes:
    lines = ["\t".join(MOVIES_HEADER)] + [f"{item}\t{title}" for item, title in sorted(movies.items())]
    return ("\n".join(lines) + "\n").encode("utf-8")


def from_wheel(wheel: Path) -> tuple[list[Rating], dict[int, str]]:
    """Ratings and titles from the pinned RecBole wheel (wheel and members sha256-checked)."""
    inter = wheel_member(RECBOLE_WHEEL, wheel, RECBOLE_INTER).decode("utf-8")
    item = wheel_member(RECBOLE_WHEEL, wheel, RECBOLE_ITEM).decode("utf-8")
    return recbole_ratings(inter, f"{wheel}!{RECBOLE_INTER}"), recbole_movies(item, f"{wheel}!{RECBOLE_ITEM}")


def from_zip(path: Path) -> tuple[list[Rating], dict[int, str]]:
    """Ratings and titles from GroupLens' ml-100k.zip (u.item is Latin-1)."""
    try:
        with zipfile.ZipFile(path) as archive:
            data, item = archive.read(ZIP_DATA).decode("utf-8"), archive.read(ZIP_ITEM).decode("latin-1")
    except (OSError, zipfile.BadZipFile, KeyError) as err:
        raise RawDataError(f"{path}: not a readable ml-100k.zip ({err})") from None
    return udata_ratings(data, f"{path}!{ZIP_DATA}"), uitem_movies(item, f"{path}!{ZIP_ITEM}")


def write_tables(dest: Path, ratings: list[Rating], movies: dict[int, str]) -> list[Path]:
    """Write the canonical tables atomically; every rated item needs a title."""
    if unknown := sorted({r.item for r in ratings} - set(movies)):
        raise RawDataError(f"{dest}: rated item(s) without a title: {unknown[:5]}")
    written = []
    for name, payload in ((RATINGS_FILE, ratings_tsv(ratings)), (MOVIES_FILE, movies_tsv(movies))):
        with atomic_path(dest / name) as tmp:
            tmp.write_bytes(payload)
        written.append(dest / name)
    return written


def prepare_movielens(dest: str | Path, zip_path: str | Path | None = None, wheel_path: str | Path | None = None) -> list[Path]:
    """Write ratings.tsv and movies.tsv under `dest` from a given ml-100k.zip, else the pinned wheel.

    A zip's ratings must convert to the wheel's exactly (`RATINGS_SHA256`).
    """
    dest = Path(dest)
    if zip_path is not None:
        ratings, movies = from_zip(Path(zip_path))
        actual = hashlib.sha256(ratings_tsv(ratings)).hexdigest()
        if actual != RATINGS_SHA256:
            raise RawDataError(f"{zip_path}: its ratings differ from MovieLens-100K's (canonical sha256 {actual}, expected {RATINGS_SHA256})")
    else:
        ratings, movies = from_wheel(fetch_wheel(RECBOLE_WHEEL, wheel_path))
    return write_tables(dest, ratings, movies)


def read_ratings(path: Path) -> list[Rating]:
    """The canonical ratings table (checked like the sources: a bad line names itself)."""
    if not path.is_file():
        raise RawDataError(f"{path}: file not found; run `python pipelines/prepare_movielens.py`")
    names, rows = _recbole_rows(path.read_text(encoding="utf-8"), str(path), RATINGS_HEADER)
    at = [names.index(name) for name in RATINGS_HEADER]
    return sorted(_rating(str(path), number, *(fields[i] for i in at)) for number, fields in rows)


def read_movies(path: Path) -> dict[int, str]:
    if not path.is_file():
        raise RawDataError(f"{path}: file not found; run `python pipelines/prepare_movielens.py`")
    names, rows = _recbole_rows(path.read_text(encoding="utf-8"), str(path), MOVIES_HEADER)
    item, title = names.index("item_id"), names.index("title")
    return {_int(str(path), number, "item_id", fields[item]): fields[title] for number, fields in rows}
