# lorarank: per-layer LoRA rank allocation under GRPO. Entry point only; stages live in workflow/rules.
import re

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/setup.smk"  # config validated (schema, then cross-field), environment, fingerprints
include: "workflow/rules/common.smk"


# Seconds of CPU on the submit host: not worth a place in a cluster queue.
localrules:
    all,
    prepare_data,
    allocate_ranks,
    write_lora_config,
    select_rate,
    analyze_gradients,
    summarize_results,
    archive_results,


wildcard_constraints:
    experiment="|".join(re.escape(name) for name in BASES),
    regime="|".join(regimes.REGIMES),
    strategy="|".join(STRATEGIES),
    policy="|".join(ALPHA_POLICIES),
    seed=r"\d+",
    lr=r"[0-9][0-9.e+-]*",
    split="test|validation",



include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/allocation.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/selection.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/archive.smk"


rule all:
    input:
        expand("results/{experiment}/summary/results.csv", experiment=BASES),
        expand("results/{experiment}/summary/results.md", experiment=BASES),
        expand("results/{experiment}/summary/gradient_stats.json", experiment=BASES),
        expand("results/{experiment}/archive/MANIFEST.json", experiment=BASES),
        # each rate selection by name, so that an arm added to a finished study runs (common.smk)
        [f for experiment in BASES for f in selection_files(experiment)],
        # several base models: the verdicts across them (workflow/rules/summary.smk)
        expand("results/{experiment}/bases/results.md", experiment=[EXPERIMENT] if len(BASES) > 1 else []),
    default_target: True
