"""Comparison methods run side by side with LoFiT, one small module per method.

- `contrast`: true/false statements from TruthfulQA rows, question-level splits, last-token
  activations (shared by the training-free methods).
- `iti`: Inference-Time Intervention (Li et al. 2023) as a LoFiT offset-only `HeadIntervention`.
- `repe`: RepE reading vectors (Zou et al. 2023) steering the residual stream.
- `lora`: LoRA through `peft`, trained with LoFiT's losses and Lightning loop.
- `red`: RED (Wu et al. 2024) per-layer scale and bias on the MLP output.
- `random_heads`: random and ITI head rankings in the step-1 heads-file format (step-2 ablations).
- `module`: the Lightning glue shared by the trainable non-head methods (LoRA, RED).

Import the submodules directly; this package imports nothing heavy on its own.
"""
