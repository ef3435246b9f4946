# Allocation stage: spec -> per-layer ranks -> verified PEFT LoraConfig, per arm (regime, strategy,
# alpha policy). The profiled strategies read their regime's uniform run's gradient log at a seed of its
# own, never one the arms are compared on (common.smk: PROFILE_POLICY, profile_seed).


rule allocate_ranks:
    input:
        unpack(shape_inputs),
        unpack(profile_inputs),
    output:
        "results/{experiment}/allocations/{regime}/{strategy}/{policy}.json",
    log:
        "logs/{experiment}/allocate_ranks/{regime}/{strategy}/{policy}.log",
    benchmark:
        "benchmarks/{experiment}/allocate_ranks/{regime}/{strategy}/{policy}.tsv"
    conda:
        environment("allocate")
    container:
        image("allocate")
    params:
        code=CODE["allocate"],
        settings=settings_flags("allocate_ranks"),
        grad_log=grad_log_flag,
    shell:
        "(python -m lorarank allocate {params.settings} --model {input.model:q} {params.grad_log}"
        " --out {output:q}) > {log:q} 2>&1"


rule write_lora_config:
    input:
        unpack(shape_inputs),
        allocation="results/{experiment}/allocations/{regime}/{strategy}/{policy}.json",
    output:
        LORA,
    log:
        "logs/{experiment}/write_lora_config/{regime}/{strategy}/{policy}.log",
    benchmark:
        "benchmarks/{experiment}/write_lora_config/{regime}/{strategy}/{policy}.tsv"
    conda:
        environment("lora-config")
    container:
        image("lora-config")
    params:
        code=CODE["lora-config"],
        settings=settings_flags("write_lora_config"),
    shell:
        "(python -m lorarank lora-config --allocation {input.allocation:q} --model {input.model:q}"
        " {params.settings} --out {output:q} --verify) > {log:q} 2>&1"
