"""Training: the regimes, the one driver, GRPO and SFT, runs, the gradient profiler and its logs, AdaLoRA's control (train.smk)."""
