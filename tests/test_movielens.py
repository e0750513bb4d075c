"""MovieLens-100K: the two sources' readers, TALLRec's samples and split, the first-token AUC."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lofit.data import movielens
from lofit.data.collate import tokenize_sft
from lofit.data.movielens import Rating, ratings_tsv, recbole_movies, recbole_ratings, uitem_movies, udata_ratings
from lofit.data.readers import RawDataError
from lofit.data.sources import RECBOLE_WHEEL, DataSourceError, PinnedWheel, wheel_member
from lofit.evaluation.yes_no import answer_token_ids, binary_auc
from lofit.io import cache_root
from lofit.tasks import get_task
from lofit.tasks.movielens import ANSWERS, HISTORY, build_samples, chronological_split

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"


def synthetic_ratings(users: int = 6, per_user: int = 16, items: int = 30) -> list[Rating]:
    """Deterministic ratings with repeated timestamps (ties) and both labels."""
    return [
        Rating(user, 1000 + 7 * step // 2 + user, 1 + (user * 5 + step * 3) % items, 1 + (user + step) % 5)
        for user in range(1, users + 1)
        for step in range(per_user)
    ]


def write_synthetic_tables(root: Path, ratings: list[Rating], items: int = 30) -> None:
    movielens.write_tables(root / "movielens", ratings, {i: f"Movie {i} ({1990 + i % 10})" for i in range(1, items + 1)})


# ---- samples and split ----


def test_window_labels_and_ties():
    # one user, 12 interactions; items 11 and 12 share a timestamp
    ratings = [Rating(1, 100 + i, i, 5 if i % 2 else 2) for i in range(1, 11)] + [Rating(1, 200, 12, 4), Rating(1, 200, 11, 3)]
    samples = build_samples(ratings)
    # both tied targets have exactly the 10 earlier interactions; neither sees the other
    assert [(s.target.item, [r.item for r in s.history]) for s in samples] == [(11, list(range(1, 11))), (12, list(range(1, 11)))]
    assert [s.liked for s in samples] == [False, True]  # 3 is not liked, 4 is


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(0, 40), st.integers(1, 9), st.integers(1, 5)), max_size=80))
def test_history_is_the_latest_ten_strictly_earlier(rows):
    ratings = list({(u, i): Rating(u, t, i, r) for u, t, i, r in rows}.values())
    samples = build_samples(ratings)
    for sample in samples:
        earlier = sorted(r for r in ratings if r.user == sample.target.user and r.timestamp < sample.target.timestamp)
        assert len(sample.history) == HISTORY
        assert list(sample.history) == earlier[-HISTORY:]
    expected = sum(
        1 for t in ratings if sum(r.user == t.user and r.timestamp < t.timestamp for r in ratings) >= HISTORY
    )
    assert len(samples) == expected
    split = chronological_split(samples)
    assert [len(split[s]) for s in ("train", "val", "test")] == [len(samples) * 8 // 10, len(samples) // 10, len(samples) - len(samples) * 8 // 10 - len(samples) // 10]
    for before, after in (("train", "val"), ("val", "test"), ("train", "test")):
        if split[before] and split[after]:
            assert max(s.target.timestamp for s in split[before]) <= min(s.target.timestamp for s in split[after])


def test_few_shot_is_seeded_subset_of_train(tmp_path):
    write_synthetic_tables(tmp_path, synthetic_ratings())
    full = get_task("movielens", tmp_path, train_size=0).samples("train")
    draw = get_task("movielens", tmp_path, train_size=16, seed=3).samples("train")
    assert len(draw) == 16 and set(draw) <= set(full)
    assert draw == get_task("movielens", tmp_path, train_size=16, seed=3).samples("train")
    assert draw != get_task("movielens", tmp_path, train_size=16, seed=4).samples("train")
    with pytest.raises(ValueError, match="train_size 10000 exceeds"):
        get_task("movielens", tmp_path, train_size=10000)


# ---- metric ----


def test_auc_against_hand_computed_case():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ranked right
    assert binary_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == pytest.approx(0.75)
    assert binary_auc([0.2, 0.2], [False, True]) == pytest.approx(0.5)  # a tie counts half
    with pytest.raises(ValueError, match="both labels"):
        binary_auc([0.1, 0.9], [True, True])


# ---- sources ----


def make_wheel(path: Path, members: dict[str, bytes]) -> PinnedWheel:
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return PinnedWheel(f"https://files.example/{path.name}", digest, {n: hashlib.sha256(p).hexdigest() for n, p in members.items()})


def test_wheel_reader_checks_wheel_and_member(tmp_path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    pinned = make_wheel(wheel, {"pkg/data.tsv": b"a\tb\n", "pkg/other.txt": b"x"})
    assert wheel_member(pinned, wheel, "pkg/data.tsv") == b"a\tb\n"
    wrong_member = PinnedWheel(pinned.url, pinned.sha256, {"pkg/data.tsv": "0" * 64})
    with pytest.raises(DataSourceError, match="pkg/data.tsv: sha256 mismatch"):
        wheel_member(wrong_member, wheel, "pkg/data.tsv")
    with pytest.raises(DataSourceError, match="sha256 mismatch"):
        wheel_member(PinnedWheel(pinned.url, "0" * 64, pinned.members), wheel, "pkg/data.tsv")


def test_zip_and_recbole_readers_give_one_table(tmp_path):
    rows = [(196, 242, 3, 881250949), (186, 302, 3, 891717742), (196, 302, 5, 881250949)]
    udata = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows)
    inter = INTER_HEADER + "\n" + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in reversed(rows))
    uitem = "242|Kolya (1996)|24-Jan-1997||http://x|0|0\n302|L.A. Confidential (1997)|01-Jan-1997||http://y|0|1\n"
    item = ITEM_HEADER + "\n242\tKolya\t1996\tComedy\n302\tL.A. Confidential\t1997\tCrime Film-Noir\n"
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr(movielens.ZIP_DATA, udata)
        handle.writestr(movielens.ZIP_ITEM, uitem.encode("latin-1"))
    zip_ratings, zip_movies = movielens.from_zip(archive)
    assert ratings_tsv(zip_ratings) == ratings_tsv(recbole_ratings(inter, "inter"))
    assert zip_movies == recbole_movies(item, "item") == {242: "Kolya (1996)", 302: "L.A. Confidential (1997)"}
    # a zip whose ratings are not MovieLens-100K's is refused
    with pytest.raises(RawDataError, match="differ from MovieLens-100K"):
        movielens.prepare_movielens(tmp_path / "out", zip_path=archive)


def test_bad_lines_name_themselves():
    with pytest.raises(RawDataError, match="header lacks column.*rating"):
        recbole_ratings("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n", "inter")
    with pytest.raises(RawDataError, match="inter: line 3: rating '7' is outside 1..5"):
        recbole_ratings(INTER_HEADER + "\n1\t2\t3\t10\n1\t3\t7\t11\n", "inter")
    with pytest.raises(RawDataError, match="u.data: line 1: rating 'x' is not a number"):
        udata_ratings("1\t2\tx\t10\n", "u.data")
    with pytest.raises(RawDataError, match="line 2: 3 fields, the header has 4"):
        recbole_ratings(INTER_HEADER + "\n1\t2\t3\n", "inter")
    with pytest.raises(RawDataError, match="u.item: line 1: no title"):
        uitem_movies("5\n", "u.item")


# ---- the task end to end ----


def test_task_end_to_end_on_tiny_model(tmp_path, tiny_backbone):
    write_synthetic_tables(tmp_path, synthetic_ratings())
    task = get_task("movielens", tmp_path, train_size=16)
    example = task.examples("train")[0]
    assert example.prompt.endswith("### Response:\n") and example.completion in ANSWERS
    assert "User Preference: " in example.prompt and "Whether the user will like the target movie \"Movie" in example.prompt
    # the scored tokens are the first answer tokens exactly as training supervises them
    yes, no = answer_token_ids(tiny_backbone, *ANSWERS)
    assert yes != no
    features = tokenize_sft(tiny_backbone, example, 0, 512)
    first_label = next(label for label in features["labels"] if label != -100)
    assert first_label == (yes if example.completion == "Yes." else no)

    out = tmp_path / "eval"
    summary = task.evaluate(tiny_backbone, "test", out_dir=out, batch_size=3)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["n"] == len(rows) == len(task.samples("test"))
    # per-example score = softmax over the two tokens of one unbatched forward
    ids = tiny_backbone.encode(task.examples("test")[0].prompt)
    with torch.no_grad():
        logits = tiny_backbone.model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    assert rows[0]["p_yes"] == pytest.approx(torch.sigmoid(logits[yes] - logits[no]).item(), abs=1e-5)
    assert summary["accuracy"] == pytest.approx(sum(r["prediction"] == r["label"] for r in rows) / len(rows))


def test_task_files_with_a_bad_line(tmp_path):
    write_synthetic_tables(tmp_path, synthetic_ratings())
    ratings = tmp_path / "movielens" / "ratings.tsv"
    ratings.write_text(ratings.read_text().replace("\n", "\n1\t2\tfive\t3\n", 1))
    with pytest.raises(RawDataError, match="ratings.tsv: line 2: rating 'five' is not a number"):
        get_task("movielens", tmp_path)


# ---- the real files, where present ----


def _real_wheel() -> Path | None:
    for candidate in (os.environ.get("LOFIT_RECBOLE_WHEEL"), cache_root() / "wheels" / RECBOLE_WHEEL.filename):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.mark.skipif(_real_wheel() is None, reason="real RecBole 1.2.1 wheel absent: set LOFIT_RECBOLE_WHEEL or run prepare_movielens.py once (caches it)")
def test_real_wheel_gives_movielens_100k(tmp_path):
    ratings, movies = movielens.from_wheel(_real_wheel())
    assert (len(ratings), len({r.user for r in ratings}), len(movies)) == (100_000, 943, 1682)
    assert hashlib.sha256(ratings_tsv(ratings)).hexdigest() == movielens.RATINGS_SHA256
    assert movies[1] == "Toy Story (1995)"


@pytest.mark.skipif(
    _real_wheel() is None or not os.environ.get("LOFIT_ML100K_ZIP"),
    reason="needs GroupLens' ml-100k.zip (LOFIT_ML100K_ZIP; not downloadable here) and the real wheel",
)
def test_real_zip_matches_the_wheel():
    zip_ratings, zip_movies = movielens.from_zip(Path(os.environ["LOFIT_ML100K_ZIP"]))
    wheel_ratings, wheel_movies = movielens.from_wheel(_real_wheel())
    assert ratings_tsv(zip_ratings) == ratings_tsv(wheel_ratings)
    assert set(zip_movies) == set(wheel_movies)


def test_the_default_folder_is_where_the_restricted_files_are_prepared():
    from lofit.tasks.movielens import MovieLens

    assert MovieLens().root == Path("data/restricted/movielens")
