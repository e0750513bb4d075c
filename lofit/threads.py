"""OpenMP settings that the entry points (the `lofit` command, the pipeline stages) apply before torch loads."""

from __future__ import annotations

import os

OMP_WAIT_ENV = "OMP_WAIT_POLICY"


def prefer_passive_omp_wait() -> None:
    """Let idle OpenMP threads sleep instead of spin-waiting, unless the user chose a policy.

    Spinning threads hold their cores between parallel regions; on a small or shared CPU they take
    time from the threads doing the work. libgomp reads the variable once, when `import torch`
    loads it, so this must run before torch is imported.
    """
    os.environ.setdefault(OMP_WAIT_ENV, "PASSIVE")
