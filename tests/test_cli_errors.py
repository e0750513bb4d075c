"""The CLI's failure contract and its start-up: one `lofit: error:` line, no noise, light imports."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lofit.cli import SUBCOMMANDS, main
from lofit.evaluation import check_batch_size, check_limit
from lofit.io import write_json

ROOT = Path(__file__).resolve().parents[1]
BNB_NOTICE = "Failed to load CPU gemm_4bit_forward"
MISSING_MODEL = "/nonexistent/lofit-test-model"  # loading it would fail with another message


def run_lofit(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "lofit.cli", *args], capture_output=True, text=True, env=environment, timeout=300
    )


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("lofit: error: ") and "\n" not in err, err
    return err


# --------------------------------------------------------------------------- limits and batch sizes
# capsys is read out (and so emptied) on every example
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    command=st.sampled_from(["evaluate", "generate"]),
    option=st.sampled_from(["--limit", "--batch_size"]),
    value=st.integers(max_value=0),
)
def test_non_positive_limit_or_batch_size_is_refused_before_anything_loads(command, option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--task.name", "truthfulqa", "--task.data_dir", "/nonexistent", "--backbone.model",
              MISSING_MODEL, option, str(value)])
    assert exit_info.value.code == 2
    err = one_error_line(capsys)
    assert option.removeprefix("--") in err and str(value) in err


@given(limit=st.one_of(st.none(), st.integers(), st.booleans()))
def test_check_limit_accepts_exactly_none_and_positive_counts(limit):
    if limit is None or (type(limit) is int and limit >= 1):
        check_limit(limit)
    else:
        with pytest.raises(ValueError, match="limit must be a positive number"):
            check_limit(limit)


@given(batch_size=st.integers())
def test_check_batch_size_accepts_exactly_positive_integers(batch_size):
    if batch_size >= 1:
        check_batch_size(batch_size)
    else:
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            check_batch_size(batch_size)


# --------------------------------------------------------------------------- inputs of judge and export
def test_judge_inputs_missing_malformed_or_not_utf8_are_one_line_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "missing.jsonl"
    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text('{"id": 1}\n{oops\n')
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes('{"id": 1, "question": "caf\xe9"}\n'.encode("latin-1"))
    for path, expected in ((missing, "file not found"), (malformed, ":2: invalid JSON"), (latin1, "not UTF-8")):
        with pytest.raises(SystemExit) as exit_info:
            main(["judge", str(path), "--output_dir", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        err = one_error_line(capsys)
        assert str(path) in err and expected in err
    assert not (tmp_path / "out").exists()


def test_export_of_a_folder_with_malformed_config_is_one_line(tmp_path, capsys):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{not json")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(folder), "--backbone.model", MISSING_MODEL, "--output_dir", str(tmp_path / "merged")])
    assert exit_info.value.code == 2
    assert f"{folder / 'adapter_config.json'}: invalid JSON" in one_error_line(capsys)


@pytest.mark.parametrize("command", ["evaluate", "serve"])
def test_a_folder_that_is_not_an_edit_is_refused_before_the_backbone_loads(command, shared_data, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    task = ["--task.name", "truthfulqa", "--task.data_dir", str(shared_data)] if command == "evaluate" else []
    with pytest.raises(SystemExit) as exit_info:
        main([command, *task, "--adapter", str(tmp_path / "empty"), "--backbone.model", MISSING_MODEL])
    assert exit_info.value.code == 2
    assert "not an edit folder" in one_error_line(capsys)


# --------------------------------------------------------------------------- internal errors and LOFIT_DEBUG
def broken(path: str = "x") -> dict:
    """A subcommand with a bug.

    Args:
        path: unused.
    """
    return {}["missing key"]


def test_an_unexpected_exception_is_one_line_exit_1_and_a_traceback_with_lofit_debug(monkeypatch, capsys):
    monkeypatch.setitem(SUBCOMMANDS, "broken", broken)
    monkeypatch.delenv("LOFIT_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["broken"])
    assert exit_info.value.code == 1
    err = one_error_line(capsys)
    assert "internal error: KeyError: 'missing key'" in err and "LOFIT_DEBUG=1" in err
    monkeypatch.setenv("LOFIT_DEBUG", "1")
    with pytest.raises(KeyError, match="missing key"):
        main(["broken"])


def test_lofit_debug_reraises_user_errors_too(tmp_path, monkeypatch):
    monkeypatch.setenv("LOFIT_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="file not found"):
        main(["judge", str(tmp_path / "missing.jsonl")])


# --------------------------------------------------------------------------- strict JSON
def test_summaries_are_strict_json(tmp_path):
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_json(tmp_path / "summary.json", {"accuracy": float("nan")})
    assert list(tmp_path.iterdir()) == [], "nothing, not even a temp file, is left behind"
    write_json(tmp_path / "summary.json", {"accuracy": None})
    assert json.loads((tmp_path / "summary.json").read_text()) == {"accuracy": None}


# --------------------------------------------------------------------------- noise and start-up
def test_the_bitsandbytes_kernels_notice_alone_is_filtered(caplog):
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
            "`pip install kernels` and the kernels >= 0.11.1",
            ModuleNotFoundError("No module named 'kernels'"),
        )
        logger.warning("another bitsandbytes warning")
    assert [record.getMessage() for record in caplog.records] == ["another bitsandbytes warning"]


def test_no_bitsandbytes_notice_on_import_or_help():
    imported = subprocess.run(
        [sys.executable, "-c", "import lofit, bitsandbytes"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300,
    )
    assert imported.returncode == 0 and BNB_NOTICE not in imported.stderr, imported.stderr
    helped = run_lofit("--help")
    assert helped.returncode == 0 and "evaluate" in helped.stdout
    assert BNB_NOTICE not in helped.stderr and helped.stderr == "", helped.stderr


HEAVY = ("torch", "transformers", "lightning", "datasets", "fastapi", "peft", "openai", "bitsandbytes")


def test_help_and_argument_errors_load_no_heavy_library():
    """`lofit --help` and argument errors must answer in well under 2 s: building the parsers
    (jsonargparse also reads the `TYPE_CHECKING` imports of every module that defines a config
    class) loads config dataclasses only; the libraries load inside the subcommands."""
    code = (
        "import contextlib, io, json, sys, lofit.cli\n"
        "for argv in (['--help'], ['select', '--help'], ['tune', '--bogus', '1'], ['serve', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        try:\n"
        "            lofit.cli.main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_an_argument_error_is_usage_and_exit_2():
    result = run_lofit("select", "--bogus", "1")
    assert result.returncode == 2 and "bogus" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_takes_a_repeated_adapter_flag(capsys):
    """`--adapter a=P --adapter b=Q` serves both adapters (jsonargparse alone keeps the last)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--adapter", "truth=/a", "--adapter=qa=/b", "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["adapter"] == ["truth=/a", "qa=/b"]
