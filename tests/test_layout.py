"""The README's Layout names every top-level folder; data/README.md names every pinned source."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from lofit.data.sources import files_for

ROOT = Path(__file__).resolve().parents[1]


def layout_folders() -> set[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Layout", 1)[1].split("```")[1]
    return {match.rstrip("/") for match in re.findall(r"^(\.?[\w-]+/)", block, flags=re.MULTILINE)}


def test_layout_lists_every_top_level_folder():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    folders = {path.split("/", 1)[0] for path in tracked if "/" in path}
    assert folders <= layout_folders(), f"missing from README Layout: {sorted(folders - layout_folders())}"


def test_data_readme_names_every_source_commit_and_licence_column():
    text = (ROOT / "data" / "README.md").read_text(encoding="utf-8")
    assert "| licence |" in text and "LOFIT_DATA_MIRROR" in text
    for raw in files_for():
        assert f"{raw.repo} @ `{raw.commit}`" in text, raw.path
        assert raw.upstream_path.rsplit("/", 1)[0] in text, raw.upstream_path
