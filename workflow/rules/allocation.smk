# Allocation stage: spec -> per-layer ranks -> verified PEFT LoraConfig.


rule allocate_ranks:
    output:
        "results/{experiment}/allocations/{strategy}.json",
    params:
        args=allocate_args,
        model=config["model"]["name_or_path"],
    log:
        "logs/{experiment}/allocate_ranks/{strategy}.log",
    shell:
        "(python -m lorarank allocate --strategy {wildcards.strategy} --model {params.model}"
        " {params.args} --out {output}) > {log} 2>&1"


rule write_lora_config:
    input:
        allocation="results/{experiment}/allocations/{strategy}.json",
    output:
        "results/{experiment}/lora/{strategy}.json",
    params:
        model=config["model"]["name_or_path"],
    log:
        "logs/{experiment}/write_lora_config/{strategy}.log",
    shell:
        "(python -m lorarank lora-config --allocation {input.allocation} --model {params.model}"
        " --out {output} --verify) > {log} 2>&1"
