"""Building a task checks its data first: missing files are placed, bad ones fail in one line naming them."""

from __future__ import annotations

import shutil
import urllib.error
from pathlib import Path

import pytest

from lofit.data import sources
from lofit.data.readers import RawDataError
from lofit.data.sources import MIRROR_ENV, sha256_of
from lofit.tasks import get_task
from lofit.training.config import TaskSpec
from lofit.training.run import build_task


def _offline(monkeypatch) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)

    def refuse(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(sources.urllib.request, "urlopen", refuse)


def test_only_the_files_a_task_reads_are_placed_from_the_mirror(shared_data, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv(MIRROR_ENV, str(shared_data))
    task = get_task("mmlu", tmp_path, shots=5, subjects=["anatomy"])
    placed = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert placed == ["mmlu/dev/anatomy_dev.csv", "mmlu/test/anatomy_test.csv"]
    assert all(sha256_of(tmp_path / p) == sha256_of(shared_data / p) for p in placed)
    err = capfd.readouterr().err
    assert err == f"lofit: placing 2 missing mmlu raw file(s) under {tmp_path} from mirror {shared_data} (sha256-checked)\n"
    assert len(task.questions()) == len((shared_data / placed[1]).read_text().splitlines())
    get_task("mmlu", tmp_path, shots=5, subjects=["anatomy"])
    assert capfd.readouterr().err == ""  # present files are neither placed again nor announced


def test_a_fresh_clone_gets_the_default_data_folder(shared_data, tmp_path, monkeypatch):
    """`lofit select --config configs/mquake-select.yaml` on a clone without data/: the task places it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(MIRROR_ENV, str(shared_data))
    task = build_task(TaskSpec(name="mquake"))
    assert sorted(p.name for p in (tmp_path / "data" / "raw" / "mquake").iterdir()) == ["test.jsonl", "train.jsonl", "val.jsonl"]
    assert task.examples("train") == get_task("mquake", shared_data).examples("train")


def test_present_files_are_kept_even_when_they_differ_from_the_source(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, str(shared_data))
    shutil.copytree(shared_data / "mquake", tmp_path / "mquake")
    lines = (tmp_path / "mquake" / "val.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "mquake" / "val.jsonl").write_text("".join(lines[:3]))
    assert len(get_task("mquake", tmp_path).examples("val")) == 3


def test_a_file_that_cannot_be_placed_is_one_line_naming_it(tmp_path, monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(RawDataError) as err:
        get_task("nq_open", tmp_path)
    message = str(err.value)
    assert message.startswith(f"{tmp_path}: nq_open/NQ-open.dev.jsonl: download failed") and "\n" not in message
    assert "$LOFIT_DATA_MIRROR" in message


def test_a_missing_data_folder_is_one_line_and_creates_nothing(tmp_path, monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(RawDataError, match=rf"^task.data_dir {tmp_path / 'nope'}: folder not found$"):
        get_task("mquake", tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


BAD_FILES = [
    # task, options, file under the task's copy, bytes written, message after the file's path
    ("mquake", {}, "mquake/val.jsonl", b'{"case_id": 1, "q": "caf\xe9"}\n', r"not UTF-8 text \(line 1, byte offset 24: invalid continuation byte\)"),
    ("clutrr", {}, "clutrr/test.json", b"", "empty file"),
    ("truthfulqa", {}, "truthfulqa/lofit_splits/fold_0_test_seed_42.csv", b"Question,Best\n\xff\n", "not UTF-8 text"),
    ("truthfulqa", {}, "truthfulqa/qa_primer.txt", b"", "empty file"),
    ("truthfulqa", {"fold": 1}, "truthfulqa/instruction.txt", b"\x80 no comment", "not UTF-8 text"),
    ("triviaqa", {}, "triviaqa/triviaqa_test_1000.jsonl", b"", "empty file"),
    ("mmlu", {"shots": 5, "subjects": ["anatomy"]}, "mmlu/dev/anatomy_dev.csv", b"Q\xe9,a,b,c,d,A\n", "not UTF-8 text"),
    ("mmlu", {"subjects": ["anatomy"]}, "mmlu/test/anatomy_test.csv", b"Q," + b"a" * 200_000 + b",b,c,d,A\n",
     r"malformed CSV \(field larger than field limit"),
]


@pytest.mark.parametrize("name, options, file, payload, message", BAD_FILES)
def test_a_bad_file_fails_when_the_task_is_built_naming_it(shared_data, tmp_path, monkeypatch, name, options, file, payload, message):
    _offline(monkeypatch)
    folder = file.split("/")[0]
    shutil.copytree(shared_data / folder, tmp_path / folder)
    (tmp_path / file).write_bytes(payload)
    with pytest.raises(RawDataError, match=rf"^{tmp_path / file}: {message}"):
        get_task(name, tmp_path, **options)


def test_the_cli_reports_bad_data_before_it_loads_a_model(tmp_path, capsys):
    """The backbone folder does not exist either: the data error comes first, so no model was loaded."""
    from lofit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["select", "--task.name", "mquake", "--task.data_dir", str(tmp_path / "nope"), "--backbone.model", str(tmp_path / "no-model")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"lofit: error: task.data_dir {tmp_path / 'nope'}: folder not found\n"


def test_the_cli_reports_a_file_that_is_not_utf8_in_one_line(shared_data, tmp_path, capsys):
    shutil.copytree(shared_data / "clutrr", tmp_path / "clutrr")
    Path(tmp_path / "clutrr" / "train.json").write_bytes(b'[{"clean_story": "\xff"}]')
    from lofit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["select", "--task.name", "clutrr", "--task.data_dir", str(tmp_path), "--backbone.model", str(tmp_path / "no-model")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(f"lofit: error: {tmp_path / 'clutrr' / 'train.json'}: not UTF-8 text")
