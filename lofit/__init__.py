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
