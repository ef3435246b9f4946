# Allocation stage: spec -> per-layer ranks -> verified PEFT LoraConfig. The profiled strategies
# read the uniform run's gradient log (the uniform arm is also the profiling run).


rule allocate_ranks:
    input:
        unpack(allocate_inputs),
    output:
        "results/{experiment}/allocations/{strategy}.json",
    params:
        code=CODE["allocate"],
        model=shape_spec,
        settings=settings_flags("allocate_ranks"),
        grad_log=grad_log_flag,
    log:
        "logs/{experiment}/allocate_ranks/{strategy}.log",
    container:
        image("allocate")
    shell:
        "(python -m lorarank allocate {params.settings} --model {params.model} {params.grad_log}"
        " --out {output}) > {log} 2>&1"


rule write_lora_config:
    input:
        unpack(shape_inputs),
        allocation="results/{experiment}/allocations/{strategy}.json",
    output:
        "results/{experiment}/lora/{strategy}.json",
    params:
        code=CODE["lora-config"],
        model=shape_spec,
        settings=settings_flags("write_lora_config"),
    log:
        "logs/{experiment}/write_lora_config/{strategy}.log",
    container:
        image("lora-config")
    shell:
        "(python -m lorarank lora-config --allocation {input.allocation} --model {params.model}"
        " {params.settings} --out {output} --verify) > {log} 2>&1"
