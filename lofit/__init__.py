"""LoFiT: localized fine-tuning of LLM representations (Yin, Ye & Durrett, NeurIPS 2024)."""

import logging

__version__ = "0.1.0"

# bitsandbytes warns on every import, on CPUs with AVX512-BF16, that an optional Hub kernel
# package is missing; its fallback works and lofit never needs that kernel. Only this message
# is dropped (on the emitting logger, which exists before bitsandbytes is imported, so nothing
# heavy is imported here); every other bitsandbytes warning still shows.
_BNB_KERNELS_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: not record.getMessage().startswith(_BNB_KERNELS_NOTICE)
)

# The public API, imported on first use (`lofit.load_backbone` imports torch then, `import lofit`
# does not), so the CLI's `--help` stays fast: name -> module that defines it.
_PUBLIC = {
    "BackboneConfig": "lofit.backbone_config",
    "Backbone": "lofit.backbone",
    "load_backbone": "lofit.backbone",
    "HeadIntervention": "lofit.intervention",
    "save_adapter": "lofit.adapter",
    "load_adapter": "lofit.adapter",
    "read_adapter_config": "lofit.adapter",
    "merge_into": "lofit.merge",
    "export_merged": "lofit.merge",
    "get_task": "lofit.tasks",
    "Task": "lofit.tasks.base",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'lofit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
