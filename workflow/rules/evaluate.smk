# Evaluation stage: every run, and the base model (strategy "base", no adapter), on the same
# seeded subset of the test split. What was evaluated is recorded from the run's run.json.


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
        settings=settings_flags("evaluate_model"),
        ops=operational_flags("evaluate_model"),
        out=subpath(output.metrics, parent=True),
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
        " {params.settings} {params.ops} --quiet --out {params.out}) > {log} 2>&1"
