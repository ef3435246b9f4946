# Evaluation stage: every run, and the base model (strategy "base", no adapter), on the same
# seeded subset of the test split.


rule evaluate_model:
    input:
        unpack(evaluate_inputs),
    output:
        predictions="results/{experiment}/eval/{strategy}/seed{seed}/predictions.parquet",
        metrics="results/{experiment}/eval/{strategy}/seed{seed}/metrics.json",
    params:
        code=CODE["evaluate"],
        model=start_spec,
        adapter=adapter_flag,
        args=evaluate_args,
    log:
        "logs/{experiment}/evaluate_model/{strategy}/seed{seed}.log",
    benchmark:
        "benchmarks/{experiment}/evaluate_model/{strategy}/seed{seed}.tsv"
    resources:
        **eval_resources(),
    container:
        image("evaluate")
    shell:
        "(python -m lorarank evaluate --model {params.model} {params.adapter} --data {input.test}"
        " {params.args} --out results/{wildcards.experiment}/eval/{wildcards.strategy}/seed{wildcards.seed})"
        " > {log} 2>&1"
