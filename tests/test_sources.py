"""Raw data placement: mirror copy, download path, sha256 checks, idempotence, clear errors."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from lofit.data import sources
from lofit.data.sources import RAW_FILES, DataSourceError, files_for, prepare, sha256_of

ROOT = Path(__file__).resolve().parents[1]


def test_table_pins_every_file_to_a_commit_and_matches_the_mirror(shared_data):
    assert {f.task for f in RAW_FILES} == {"truthfulqa", "mquake", "clutrr", "triviaqa", "nq_open", "mmlu"}
    assert len({f.path for f in RAW_FILES}) == len(RAW_FILES)
    for raw in RAW_FILES:
        assert raw.url.startswith(f"https://raw.githubusercontent.com/{raw.repo}/{raw.commit}/")
        assert len(raw.commit) == 40
        assert sha256_of(shared_data / raw.path) == raw.sha256, raw.path


def test_prepare_from_mirror_is_idempotent(shared_data, tmp_path):
    placed = prepare(tmp_path, mirror=shared_data, tasks=["mquake", "clutrr"])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in placed) == sorted(
        f.path for f in files_for(["mquake", "clutrr"])
    )
    stamp = {p: p.stat().st_mtime_ns for p in placed}
    prepare(tmp_path, mirror=shared_data, tasks=["mquake", "clutrr"])
    assert {p: p.stat().st_mtime_ns for p in placed} == stamp


def test_prepare_replaces_a_corrupted_file(shared_data, tmp_path):
    target = tmp_path / "mquake" / "val.jsonl"
    target.parent.mkdir(parents=True)
    target.write_text("corrupted\n")
    prepare(tmp_path, mirror=shared_data, tasks=["mquake"])
    assert sha256_of(target) == sha256_of(shared_data / "mquake" / "val.jsonl")


def test_mirror_with_wrong_checksum_names_file_and_both_options(shared_data, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(shared_data / "mquake", mirror / "mquake")
    (mirror / "mquake" / "test.jsonl").write_text("{}\n")
    with pytest.raises(DataSourceError) as err:
        prepare(tmp_path / "raw", mirror=mirror, tasks=["mquake"])
    message = str(err.value)
    assert "mquake/test.jsonl: sha256 mismatch" in message
    assert "--mirror" in message and "network" in message and "\n" not in message


def test_file_missing_from_mirror(tmp_path):
    with pytest.raises(DataSourceError, match=r"clutrr/train.json: missing from mirror .*--mirror or \$LOFIT_DATA_MIRROR"):
        prepare(tmp_path / "raw", mirror=tmp_path, tasks=["clutrr"])


def test_no_mirror_and_no_network(tmp_path, monkeypatch):
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)

    def offline(url, timeout):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(sources.urllib.request, "urlopen", offline)
    with pytest.raises(DataSourceError, match=r"nq_open/NQ-open.dev.jsonl: download failed .*no mirror.*network access"):
        prepare(tmp_path, tasks=["nq_open"])


def test_mirror_comes_from_the_environment(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv(sources.MIRROR_ENV, str(shared_data))
    assert prepare(tmp_path, tasks=["nq_open"]) == [tmp_path / "nq_open" / "NQ-open.dev.jsonl"]


def _serve(monkeypatch, payload_by_url: dict[str, bytes]) -> None:
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)
    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload_by_url[url]))


def test_download_extracts_the_prompt_literal_and_verifies_it(shared_data, tmp_path, monkeypatch):
    primer = (shared_data / "truthfulqa" / "qa_primer.txt").read_text(encoding="utf-8")
    instruction = (shared_data / "truthfulqa" / "instruction.txt").read_text(encoding="utf-8")
    by_path = {f.path: f for f in files_for(["truthfulqa"])}
    payloads = {f.url: (shared_data / f.path).read_bytes() for f in by_path.values()}
    payloads[by_path["truthfulqa/qa_primer.txt"].url] = f'preset_map = {{}}\nQA_PRIMER = """{primer}"""\n'.encode()
    payloads[by_path["truthfulqa/instruction.txt"].url] = f"x = 1\n    prompt = '{instruction}' + '\\n\\n'\n".encode()
    _serve(monkeypatch, payloads)
    prepare(tmp_path, tasks=["truthfulqa"])
    assert (tmp_path / "truthfulqa" / "qa_primer.txt").read_text(encoding="utf-8") == primer
    assert (tmp_path / "truthfulqa" / "instruction.txt").read_text(encoding="utf-8") == instruction


def test_download_with_wrong_checksum_leaves_no_file(tmp_path, monkeypatch):
    _serve(monkeypatch, {f.url: b"tampered" for f in files_for(["nq_open"])})
    with pytest.raises(DataSourceError, match=r"nq_open/NQ-open.dev.jsonl: sha256 mismatch .*raw.githubusercontent.com"):
        prepare(tmp_path, tasks=["nq_open"])
    assert list(tmp_path.rglob("*")) == [tmp_path / "nq_open"]


def test_unknown_task_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['squad'\]"):
        prepare(tmp_path, tasks=["squad"])


def test_cli_exits_nonzero_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "pipelines/prepare_data.py", "--dest", str(tmp_path / "raw"), "--mirror", str(tmp_path), "--tasks", "mquake"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "mquake/train.jsonl: missing from mirror" in result.stderr


def test_cli_places_files(shared_data, tmp_path):
    result = subprocess.run(
        [sys.executable, "pipelines/prepare_data.py", "--dest", str(tmp_path), "--mirror", str(shared_data), "--tasks", "clutrr"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "clutrr").iterdir()) == ["test.json", "train.json", "val.json"]
