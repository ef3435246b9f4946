"""Models: the tiny Qwen2, a hub model fetched once, a GGUF import, and how models load (model.smk)."""
