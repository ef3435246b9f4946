# Evaluation stage: every run, and the base model (no adapter), on the same seeded subset of the test
# split. What was evaluated is what the run's run.json says (recorded in metrics.json).


rule evaluate_model:
    input:
        unpack(evaluate_inputs),
    output:
        predictions=f"{EVAL}/predictions.parquet",
        metrics=f"{EVAL}/metrics.json",
    params:
        code=CODE["evaluate"],
        settings=settings_flags("evaluate_model"),
        ops=operational_flags("evaluate_model"),
        out=subpath(output.metrics, parent=True),
    log:
        "logs/{experiment}/evaluate_model/{regime}/{strategy}/{policy}/seed{seed}.log",
    benchmark:
        "benchmarks/{experiment}/evaluate_model/{regime}/{strategy}/{policy}/seed{seed}.tsv"
    threads:
        THREADS
    resources:
        **eval_resources(),
    container:
        image("evaluate")
    shell:
        "(HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m lorarank evaluate --model {input.model} --adapter {input.adapter} --data {input.test}"
        " {params.settings} {params.ops} --quiet --out {params.out}) > {log} 2>&1"


rule evaluate_base:
    input:
        unpack(start_inputs),
        test="results/{experiment}/data/test.parquet",
    output:
        predictions="results/{experiment}/eval/base/seed{seed}/predictions.parquet",
        metrics="results/{experiment}/eval/base/seed{seed}/metrics.json",
    params:
        code=CODE["evaluate"],
        settings=settings_flags("evaluate_model"),
        ops=operational_flags("evaluate_model"),
        out=subpath(output.metrics, parent=True),
    log:
        "logs/{experiment}/evaluate_base/seed{seed}.log",
    benchmark:
        "benchmarks/{experiment}/evaluate_base/seed{seed}.tsv"
    threads:
        THREADS
    resources:
        **eval_resources(),
    container:
        image("evaluate")
    shell:
        "(HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m lorarank evaluate --model {input.model} --data {input.test}"
        " {params.settings} {params.ops} --quiet --out {params.out}) > {log} 2>&1"
