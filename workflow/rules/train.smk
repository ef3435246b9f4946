# Training stage: one run per arm (regime, strategy, alpha policy) and seed, profiled: GRPO (TRL
# GRPOTrainer) or LoRA-SFT (TRL SFTTrainer, loss on the completion), from the same start model and the
# same training rows; ranks.parquet is the adapter's ranks (an adalora run's over training, `lorarank.adalora`).
# A rerun after preemption resumes from the run directory's newest checkpoint
# (checkpoints are not outputs, so they survive). Compute jobs run offline (HF_HUB_OFFLINE): they read
# local paths only, which compute nodes without internet require.


rule train_grpo:
    input:
        unpack(start_inputs),
        lora="results/{experiment}/lora/grpo/{strategy}/{policy}.json",
        train="results/{experiment}/data/train.parquet",
    output:
        adapter=directory("results/{experiment}/runs/grpo/{strategy}/{policy}/seed{seed}/final"),
        grad_log="results/{experiment}/runs/grpo/{strategy}/{policy}/seed{seed}/grad_norms.parquet",
        trainer_log="results/{experiment}/runs/grpo/{strategy}/{policy}/seed{seed}/trainer_log.jsonl",
        run="results/{experiment}/runs/grpo/{strategy}/{policy}/seed{seed}/run.json",
        ranks="results/{experiment}/runs/grpo/{strategy}/{policy}/seed{seed}/ranks.parquet",
    params:
        code=CODE["train"],
        settings=settings_flags("train_grpo"),
        ops=operational_flags("train_grpo"),
        launcher=launcher,
        out=subpath(output.run, parent=True),
    log:
        "logs/{experiment}/train_grpo/{strategy}/{policy}/seed{seed}.log",
    benchmark:
        "benchmarks/{experiment}/train_grpo/{strategy}/{policy}/seed{seed}.tsv"
    threads:
        THREADS
    resources:
        **train_resources(),
    container:
        image("train")
    shell:
        "(HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 {params.launcher} lorarank train --model {input.model} --lora {input.lora} --data {input.train}"
        " --seed {wildcards.seed} {params.settings} {params.ops} --out {params.out}) > {log} 2>&1"


rule train_sft:
    input:
        unpack(start_inputs),
        lora="results/{experiment}/lora/sft/{strategy}/{policy}.json",
        train="results/{experiment}/data/train.parquet",
    output:
        adapter=directory("results/{experiment}/runs/sft/{strategy}/{policy}/seed{seed}/final"),
        grad_log="results/{experiment}/runs/sft/{strategy}/{policy}/seed{seed}/grad_norms.parquet",
        trainer_log="results/{experiment}/runs/sft/{strategy}/{policy}/seed{seed}/trainer_log.jsonl",
        run="results/{experiment}/runs/sft/{strategy}/{policy}/seed{seed}/run.json",
        ranks="results/{experiment}/runs/sft/{strategy}/{policy}/seed{seed}/ranks.parquet",
    params:
        code=CODE["sft"],
        settings=settings_flags("train_sft"),
        ops=operational_flags("train_sft"),
        launcher=launcher,
        out=subpath(output.run, parent=True),
    log:
        "logs/{experiment}/train_sft/{strategy}/{policy}/seed{seed}.log",
    benchmark:
        "benchmarks/{experiment}/train_sft/{strategy}/{policy}/seed{seed}.tsv"
    threads:
        THREADS
    resources:
        **train_resources(),
    container:
        image("sft")
    shell:
        "(HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 {params.launcher} lorarank sft --model {input.model} --lora {input.lora} --data {input.train}"
        " --seed {wildcards.seed} {params.settings} {params.ops} --out {params.out}) > {log} 2>&1"
