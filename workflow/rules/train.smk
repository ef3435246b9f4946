# Training stage: one run per arm (regime, strategy, alpha policy), rate and seed, profiled, through one driver
# (`lorarank.training.driver`): one rule per training regime of `lorarank.training.regimes` (GRPO: TRL GRPOTrainer, `lorarank
# train`; LoRA-SFT: TRL SFTTrainer, loss on the completion, `lorarank sft`), from the same start model and the
# same training rows; ranks.parquet is the adapter's ranks (an adalora run's over training, `lorarank.training.adalora`).
# A rerun after preemption resumes from the run directory's newest checkpoint
# (checkpoints are not outputs, so they survive). Compute jobs run offline (HF_HUB_OFFLINE): they read
# local paths only, which compute nodes without internet require.

for _regime in regimes.REGIMES.values():

    rule:
        name:
            _regime.rule
        input:
            unpack(start_inputs),
            lora=of_regime(LORA, _regime),
            train="results/{experiment}/data/train.parquet",
        output:
            adapter=directory(of_regime(f"{RUN}/final", _regime)),
            grad_log=of_regime(f"{RUN}/grad_norms.parquet", _regime),
            trainer_log=of_regime(f"{RUN}/trainer_log.jsonl", _regime),
            run=of_regime(f"{RUN}/run.json", _regime),
            ranks=of_regime(f"{RUN}/ranks.parquet", _regime),
        log:
            f"logs/{{experiment}}/{_regime.rule}/{{strategy}}/{{policy}}/lr{{lr}}/seed{{seed}}.log",
        benchmark:
            f"benchmarks/{{experiment}}/{_regime.rule}/{{strategy}}/{{policy}}/lr{{lr}}/seed{{seed}}.tsv"
        conda:
            environment(_regime.command)
        container:
            image(_regime.command)
        threads: TRAIN_THREADS
        resources:
            **train_resources(),
        params:
            code=CODE[_regime.command],
            settings=settings_flags(_regime.rule),
            ops=operational_flags(_regime.rule),
            launcher=launcher,
            command=_regime.command,
            out=subpath(output.run, parent=True),
        shell:
            "(HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 {params.launcher} lorarank {params.command} --model {input.model:q}"
            " --lora {input.lora:q} --data {input.train:q} --seed {wildcards.seed} {params.settings} {params.ops}"
            " --out {params.out:q}) > {log:q} 2>&1"
