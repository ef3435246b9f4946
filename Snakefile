# lorarank: per-layer LoRA rank allocation under GRPO. Entry point only; stages live in workflow/rules.
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
    experiment=config["experiment"],
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
        expand("results/{experiment}/summary/results.csv", experiment=config["experiment"]),
        expand("results/{experiment}/summary/results.md", experiment=config["experiment"]),
        expand("results/{experiment}/summary/gradient_stats.json", experiment=config["experiment"]),
        expand("results/{experiment}/archive/MANIFEST.json", experiment=config["experiment"]),
    default_target: True
