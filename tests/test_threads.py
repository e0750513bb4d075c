"""Entry points ask OpenMP for passive waiting before torch loads, and leave a user's choice alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lofit.cli import main
from lofit.threads import OMP_WAIT_ENV

ROOT = Path(__file__).resolve().parents[1]
# What a stage sees once it has imported pipelines/common.py (as every torch stage does first).
STAGE = (
    "import os, sys\n"
    f"sys.path.insert(0, {str(ROOT / 'pipelines')!r})\n"
    "import common\n"
    f"print(os.environ.get({OMP_WAIT_ENV!r}), 'torch' in sys.modules)\n"
)


@pytest.mark.parametrize("user_value, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_pipeline_stages_set_the_policy_before_torch_is_imported(user_value, expected):
    env = {key: value for key, value in os.environ.items() if key != OMP_WAIT_ENV}
    if user_value is not None:
        env[OMP_WAIT_ENV] = user_value
    result = subprocess.run([sys.executable, "-c", STAGE], env=env, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{expected} False\n"


@pytest.mark.parametrize("user_value, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_lofit_command_sets_the_policy_unless_the_user_did(monkeypatch, capsys, user_value, expected):
    monkeypatch.delenv(OMP_WAIT_ENV, raising=False)
    if user_value is not None:
        monkeypatch.setenv(OMP_WAIT_ENV, user_value)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "select" in capsys.readouterr().out
    assert os.environ[OMP_WAIT_ENV] == expected
