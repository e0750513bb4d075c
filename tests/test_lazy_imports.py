"""The modules the CLI reads to build its parser import no torch, transformers or datasets (`lofit --help` ≤ 2 s)."""

from __future__ import annotations

import subprocess
import sys

CHECK = (
    "import lofit.backbone, lofit.convert, lofit.io, lofit.tasks, lofit.data.examples, lofit.data.readers, lofit.data.sources\n"
    "import sys\n"
    "print(sorted(name for name in ('torch', 'transformers', 'datasets') if name in sys.modules))\n"
)


def test_backbone_tasks_and_data_import_without_the_heavy_libraries():
    result = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n"
