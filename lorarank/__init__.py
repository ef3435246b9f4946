"""lorarank: per-layer LoRA rank allocation studies under GRPO."""

__version__ = "0.1.0"
