# Data stage: GSM8K (hub, local jsonl) or the synthetic stand-in, as parquet splits + manifest. The source's
# train split gives the warm-up (first rows), the arms' training rows and validation (last rows).


rule prepare_data:
    input:
        unpack(prepare_data_inputs),
    output:
        warmup="results/{experiment}/data/warmup.parquet",
        train="results/{experiment}/data/train.parquet",
        validation="results/{experiment}/data/validation.parquet",  # every selection reads it, never test
        test="results/{experiment}/data/test.parquet",
        manifest="results/{experiment}/data/manifest.json",
    log:
        "logs/{experiment}/prepare_data.log",
    benchmark:
        "benchmarks/{experiment}/prepare_data.tsv"
    conda:
        environment("prepare-data")
    container:
        image("prepare-data")
    params:
        code=CODE["prepare-data"],
        settings=settings_flags("prepare_data"),
        out=subpath(output.manifest, parent=True),
    shell:
        "(python -m lorarank prepare-data {params.settings} --out {params.out:q}) > {log:q} 2>&1"
