# lorarank: per-layer LoRA rank allocation under GRPO. Entry point only; stages live in workflow/rules.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/allocation.smk"


rule all:
    input:
        lora_configs(),
    default_target: True
