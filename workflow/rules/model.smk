# Model stage (tiny model only): build a small Qwen2 with a local tokenizer, then warm it up with
# SFT so that GRPO has a signal. The warm-up is profiled: the SFT side of the SFT-vs-GRPO contrast.


rule build_model:
    input:
        train="results/{experiment}/data/train.parquet",
    output:
        directory("results/{experiment}/model/base"),
    params:
        code=CODE["build-model"],
        args=build_model_args,
    log:
        "logs/{experiment}/build_model.log",
    container:
        image("build-model")
    shell:
        "(python -m lorarank build-model --data {input.train} {params.args} --out {output}) > {log} 2>&1"


rule run_sft:
    input:
        model="results/{experiment}/model/base",
        train="results/{experiment}/data/train.parquet",
    output:
        model=directory("results/{experiment}/sft/final"),
        grad_log="results/{experiment}/sft/grad_norms.parquet",
        trainer_log="results/{experiment}/sft/trainer_log.jsonl",
        run="results/{experiment}/sft/run.json",
    params:
        code=CODE["sft"],
        args=sft_args,
    log:
        "logs/{experiment}/run_sft.log",
    benchmark:
        "benchmarks/{experiment}/run_sft.tsv"
    resources:
        **train_resources(),
    container:
        image("sft")
    shell:
        "(python -m lorarank sft --model {input.model} --data {input.train} {params.args}"
        " --out results/{wildcards.experiment}/sft) > {log} 2>&1"
