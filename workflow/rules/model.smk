# Model stage: the base model as a local directory. The tiny model is built here and warmed up with
# full-weight SFT so that GRPO has a signal (profiled too: rows 'W'); a GGUF model is imported; a hub
# model is fetched once, on the submit host, at a pinned revision (compute jobs never need the network).


if HUB:

    localrules:
        fetch_model,  # the submit host: the one machine with the network

    rule fetch_model:
        output:
            directory("resources/{experiment}/model"),
        log:
            "logs/{experiment}/fetch_model.log",
        benchmark:
            "benchmarks/{experiment}/fetch_model.tsv"
        conda:
            environment("fetch-model")
        container:
            image("fetch-model")
        params:
            code=CODE["fetch-model"],
            settings=settings_flags("fetch_model"),
        shell:
            "(python -m lorarank fetch-model {params.settings} --out {output:q}) > {log:q} 2>&1"


if SOURCE == "gguf":

    localrules:
        import_model,

    rule import_model:
        output:
            directory("results/{experiment}/model/base"),
        log:
            "logs/{experiment}/import_model.log",
        benchmark:
            "benchmarks/{experiment}/import_model.tsv"
        conda:
            environment("import-model")
        container:
            image("import-model")
        threads: THREADS
        params:
            code=CODE["import-model"],
            settings=settings_flags("import_model"),
        shell:
            "(python -m lorarank import-model {params.settings} --out {output:q}) > {log:q} 2>&1"


if TINY:

    localrules:
        build_model,

    rule build_model:
        input:
            train="results/{experiment}/data/train.parquet",
        output:
            directory("results/{experiment}/model/base"),
        log:
            "logs/{experiment}/build_model.log",
        benchmark:
            "benchmarks/{experiment}/build_model.tsv"
        conda:
            environment("build-model")
        container:
            image("build-model")
        threads: THREADS
        params:
            code=CODE["build-model"],
            settings=settings_flags("build_model"),
        shell:
            "(python -m lorarank build-model --data {input.train:q} {params.settings} --out {output:q}) > {log:q} 2>&1"

    rule run_warmup:
        input:
            model="results/{experiment}/model/base",
            train="results/{experiment}/data/warmup.parquet",  # rows the arms never train on
        output:
            model=directory("results/{experiment}/warmup/final"),
            grad_log="results/{experiment}/warmup/grad_norms.parquet",
            trainer_log="results/{experiment}/warmup/trainer_log.jsonl",
            run="results/{experiment}/warmup/run.json",
        log:
            "logs/{experiment}/run_warmup.log",
        benchmark:
            "benchmarks/{experiment}/run_warmup.tsv"
        conda:
            environment("sft")
        container:
            image("sft")
        threads: THREADS
        resources:
            **train_resources(),
        params:
            code=CODE["sft"],
            settings=settings_flags("run_warmup"),
            ops=operational_flags("run_warmup"),
            out=subpath(output.run, parent=True),
        shell:
            "(HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m lorarank sft --model {input.model:q} --data {input.train:q} {params.settings} {params.ops}"
            " --out {params.out:q}) > {log:q} 2>&1"
