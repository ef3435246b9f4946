"""lorarank: per-layer LoRA rank allocation studies under GRPO.

Module map, in pipeline order (stage: rule -> `lorarank <command>` -> module):

  data        prepare_data      -> prepare-data   -> data          GSM8K splits (+ the synthetic stand-in)
  model       build_model       -> build-model    -> build_model   the tiny Qwen2 and its tokenizer
              run_warmup        -> sft            -> sft           its full-weight SFT warm-up
  allocation  allocate_ranks    -> allocate       -> allocation    ranks at an exact budget (the math)
              write_lora_config -> lora-config    -> lora          the verified PEFT LoraConfig (PEFT glue)
  training    train_grpo        -> train          -> train         GRPO (TRL glue); runs, profiler
  evaluation  evaluate_model    -> evaluate       -> evaluate      greedy generation; gsm8k grades
  summary     analyze_gradients -> analyze        -> analysis      gradient statistics; figures
              summarize_results -> summarize      -> summary       accuracies, paired tests; stats
  archive     archive_results   -> archive        -> archive       tarball + manifest; verify_archive checks it
  (make run)                       check-run      -> published     scientific outputs vs the published digests
  (tools)                          check-pattern  -> patterns      lint a hand-written rank_pattern
                                   fingerprint    -> fingerprint   what each command's rerun trigger hashes

Shared pieces, one place each: `study` (alpha policies, scaling, a run's identity, the allocation
file), `allocation.strategies` (the strategy registry), `model` (model specs, loading, the bf16 decision), `gradlog` (the gradient-log
contract and shares), `prompts` (layouts), `rewards`, `options` (settings dataclasses -> flags),
`numerics` (the CPU/GPU numerics profile every compute command applies: the same bits on any x86-64
CPU), `workflow_config` (config keys -> flags, cross-field checks; what the Snakefile imports), `io`
(atomic writes, hashes), `environment`, `containers`, `errors`, `argtypes`, `cli` (the entry point).
"""

__version__ = "0.2.0"
