"""The modules the CLI reads to build its parser import no torch, transformers or datasets (`lofit --help` ≤ 2 s)."""

from __future__ import annotations

import subprocess
import sys

CHECK = (
    "import lofit.backbone, lofit.convert, lofit.io, lofit.tasks, lofit.data.examples, lofit.data.readers, lofit.data.sources\n"
    "import sys\n"
    "print(sorted(name for name in ('torch', 'transformers', 'datasets') if name in sys.modules))\n"
)


def printed_by(code: str) -> str:
    """What `code` prints in a fresh interpreter (which imports it makes show in sys.modules there)."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_backbone_tasks_and_data_import_without_the_heavy_libraries():
    assert printed_by(CHECK) == "[]\n"


PUBLIC_API = (
    "import lofit, sys\n"
    "heavy = sorted(name for name in ('torch', 'transformers', 'datasets') if name in sys.modules)\n"
    "from lofit import BackboneConfig, load_backbone, HeadIntervention, save_adapter, load_adapter, merge_into, export_merged, get_task\n"
    "import lofit.backbone, lofit.intervention, lofit.adapter, lofit.merge, lofit.tasks\n"
    "assert load_backbone is lofit.backbone.load_backbone and HeadIntervention is lofit.intervention.HeadIntervention\n"
    "assert export_merged is lofit.merge.export_merged and get_task is lofit.tasks.get_task\n"
    "print(heavy)\n"
)


def test_the_public_api_is_importable_from_lofit_and_lazy():
    assert printed_by(PUBLIC_API) == "[]\n"
