# Evaluation stage: every run, and the base model (no adapter), on the same seeded subset of a split: test
# for the runs the study reports, validation for the runs that choose an arm's rate (selection.smk). What
# was evaluated is what the run's run.json says (recorded in metrics.json, with the split file's hash).


rule evaluate_model:
    input:
        unpack(evaluate_inputs),
    output:
        predictions=f"{EVAL}/predictions.parquet",
        metrics=f"{EVAL}/metrics.json",
    log:
        "logs/{experiment}/evaluate_model/{split}/{regime}/{strategy}/{policy}/lr{lr}/seed{seed}.log",
    benchmark:
        "benchmarks/{experiment}/evaluate_model/{split}/{regime}/{strategy}/{policy}/lr{lr}/seed{seed}.tsv"
    conda:
        environment("evaluate")
    container:
        image("evaluate")
    threads: THREADS
    resources:
        **eval_resources(),
    params:
        code=CODE["evaluate"],
        settings=settings_flags("evaluate_model"),
        ops=operational_flags("evaluate_model"),
        out=subpath(output.metrics, parent=True),
    shell:
        "(HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m lorarank evaluate --model {input.model:q} --adapter {input.adapter:q} --data {input.data:q}"
        " {params.settings} {params.ops} --quiet --out {params.out:q}) > {log:q} 2>&1"


rule evaluate_base:
    input:
        unpack(start_inputs),
        test="results/{experiment}/data/test.parquet",
    output:
        predictions=f"{BASE_EVAL}/predictions.parquet",
        metrics=f"{BASE_EVAL}/metrics.json",
    log:
        "logs/{experiment}/evaluate_base/seed{seed}.log",
    benchmark:
        "benchmarks/{experiment}/evaluate_base/seed{seed}.tsv"
    conda:
        environment("evaluate")
    container:
        image("evaluate")
    threads: THREADS
    resources:
        **eval_resources(),
    params:
        code=CODE["evaluate"],
        settings=settings_flags("evaluate_model"),
        ops=operational_flags("evaluate_model"),
        out=subpath(output.metrics, parent=True),
    shell:
        "(HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m lorarank evaluate --model {input.model:q} --data {input.test:q}"
        " {params.settings} {params.ops} --quiet --out {params.out:q}) > {log:q} 2>&1"
