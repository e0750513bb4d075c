"""LoFiT: localized fine-tuning of LLM representations (Yin, Ye & Durrett, NeurIPS 2024)."""

__version__ = "0.1.0"
