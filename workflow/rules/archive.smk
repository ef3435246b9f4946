# Archive stage: one deterministic tarball of every result the DAG produced, and MANIFEST.json
# (file hashes, resolved config, code version, container digests, package versions seen at run
# time, Snakemake version, hardware). `lorarank verify-archive results/<experiment>/archive` checks it.


rule archive_results:
    input:
        archive_inputs,
    output:
        tarball="results/{experiment}/archive/{experiment}.tar.gz",
        manifest="results/{experiment}/archive/MANIFEST.json",
    log:
        "logs/{experiment}/archive_results.log",
    benchmark:
        "benchmarks/{experiment}/archive_results.tsv"
    conda:
        environment("archive")
    container:
        image("archive")
    params:
        code=CODE["archive"],
        config=config_json,
        snakemake=snakemake.__version__,
        results=subpath(output.manifest, ancestor=2),
        resources=resource_records,
        out=subpath(output.manifest, parent=True),
    shell:
        "(python -m lorarank archive --results {params.results:q} --inputs {input:q}"
        " --config-json {params.config:q} --snakemake-version {params.snakemake:q} --resources {params.resources:q}"
        " --out {params.out:q}) > {log:q} 2>&1"
