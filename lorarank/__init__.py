"""lorarank: per-layer LoRA rank allocation studies under GRPO.

Module map, in pipeline order (stage: rule -> `lorarank <command>` -> module); docs/design.md, "Layout":

  data        prepare_data      -> prepare-data   -> data.prepare          GSM8K splits (+ the synthetic stand-in)
  models      build_model       -> build-model    -> models.build_model    the tiny Qwen2 and its tokenizer
              run_warmup        -> sft            -> training.sft          its full-weight SFT warm-up
  allocation  allocate_ranks    -> allocate       -> allocation.allocate   ranks at an exact budget (the math)
              write_lora_config -> lora-config    -> allocation.lora       the verified PEFT LoraConfig (PEFT glue)
  training    train_<regime>    -> train, sft     -> training.train, .sft  one driver (training.driver), one
                                                                           rule per regime (training.regimes)
  evaluation  evaluate_model    -> evaluate       -> evaluation.evaluate   greedy generation; gsm8k grades
  report      select_rate       -> select-rate    -> report.selection      an arm's rate, chosen on validation
              analyze_gradients -> analyze        -> report.analysis       gradient statistics; figures
              summarize_results -> summarize      -> report.summary        accuracies at the level of runs;
                                                                           stats, verdicts (the declared rule)
  provenance  archive_results   -> archive        -> provenance.archive    tarball + manifest (verify-archive)
  (make run)                       check-run      -> provenance.published  outputs vs the published digests
  (tools)                          check-pattern  -> allocation.patterns   lint a hand-written rank_pattern
                                   fingerprint    -> provenance.fingerprint what each rerun trigger hashes

Shared, at the top: `study` (alpha policies, a run's identity, arms), `options` (settings dataclasses ->
flags), `numerics` (the numerics profile every compute command applies: the same bits on any x86-64 CPU),
`workflow_config` (config keys -> flags, cross-field checks; what the Snakefile imports), `io` (atomic
writes, hashes), `errors`, `argtypes`, `cli` (the entry point).
"""

__version__ = "0.3.0"
