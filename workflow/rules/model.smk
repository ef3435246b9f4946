# Model stage (tiny model only): build a small Qwen2 with a local tokenizer, then warm it up with
# full-weight SFT so that GRPO has a signal. The warm-up is profiled too (rows 'W').


rule build_model:
    input:
        train="results/{experiment}/data/train.parquet",
    output:
        directory("results/{experiment}/model/base"),
    params:
        code=CODE["build-model"],
        settings=settings_flags("build_model"),
    log:
        "logs/{experiment}/build_model.log",
    container:
        image("build-model")
    shell:
        "(python -m lorarank build-model --data {input.train} {params.settings} --out {output}) > {log} 2>&1"


rule run_warmup:
    input:
        model="results/{experiment}/model/base",
        train="results/{experiment}/data/train.parquet",
    output:
        model=directory("results/{experiment}/warmup/final"),
        grad_log="results/{experiment}/warmup/grad_norms.parquet",
        trainer_log="results/{experiment}/warmup/trainer_log.jsonl",
        run="results/{experiment}/warmup/run.json",
    params:
        code=CODE["sft"],
        settings=settings_flags("run_warmup"),
        ops=operational_flags("run_warmup"),
        out=subpath(output.run, parent=True),
    log:
        "logs/{experiment}/run_warmup.log",
    benchmark:
        "benchmarks/{experiment}/run_warmup.tsv"
    resources:
        **train_resources(),
    container:
        image("sft")
    shell:
        "(python -m lorarank sft --model {input.model} --data {input.train} {params.settings} {params.ops}"
        " --out {params.out}) > {log} 2>&1"
