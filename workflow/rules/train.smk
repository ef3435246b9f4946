# Training stage: one GRPO run per (strategy, seed), profiled. A rerun after preemption resumes
# from the run directory's newest checkpoint (checkpoints are not outputs, so they survive).


rule train_grpo:
    input:
        unpack(start_inputs),
        lora="results/{experiment}/lora/{strategy}.json",
        train="results/{experiment}/data/train.parquet",
    output:
        adapter=directory("results/{experiment}/runs/{strategy}/seed{seed}/final"),
        grad_log="results/{experiment}/runs/{strategy}/seed{seed}/grad_norms.parquet",
        trainer_log="results/{experiment}/runs/{strategy}/seed{seed}/trainer_log.jsonl",
        run="results/{experiment}/runs/{strategy}/seed{seed}/run.json",
    params:
        code=CODE["train"],
        model=start_spec,
        settings=settings_flags("train_grpo"),
        ops=operational_flags("train_grpo"),
        launcher=launcher,
        out=subpath(output.run, parent=True),
    log:
        "logs/{experiment}/train_grpo/{strategy}/seed{seed}.log",
    benchmark:
        "benchmarks/{experiment}/train_grpo/{strategy}/seed{seed}.tsv"
    resources:
        **train_resources(),
    container:
        image("train")
    shell:
        "({params.launcher} lorarank train --model {params.model} --lora {input.lora} --data {input.train}"
        " --seed {wildcards.seed} {params.settings} {params.ops} --out {params.out}) > {log} 2>&1"
