# Summary stage: gradient statistics and figures, and one table of every arm (rank range,
# trainable parameters, accuracies with CIs, paired tests against uniform), for the HTML report
# (`snakemake --report report.html`).


rule analyze_gradients:
    input:
        runs=analysis_runs,
    output:
        stats=report(
            "results/{experiment}/summary/gradient_stats.json",
            caption="../report/gradient_stats.rst",
            category="Gradients",
        ),
        heatmaps=report(
            expand("results/{{experiment}}/summary/figures/{name}", name=HEATMAPS),
            caption="../report/heatmap.rst",
            category="Gradients",
        ),
        amplification=report(
            "results/{experiment}/summary/figures/amplification.png",
            caption="../report/amplification.rst",
            category="Gradients",
        ),
        shares=report(
            "results/{experiment}/summary/figures/shares.png", caption="../report/shares.rst", category="Gradients"
        ),
        contrast=report(
            "results/{experiment}/summary/figures/contrast.png", caption="../report/contrast.rst", category="Gradients"
        ),
        ranks=report(
            expand("results/{{experiment}}/summary/figures/{name}.png", name=RANK_FIGURES),
            caption="../report/ranks.rst",
            category="Gradients",
        ),
    log:
        "logs/{experiment}/analyze_gradients.log",
    benchmark:
        "benchmarks/{experiment}/analyze_gradients.tsv"
    conda:
        environment("analyze")
    container:
        image("analyze")
    params:
        code=CODE["analyze"],
        runs=analysis_args,
        out=subpath(output.stats, parent=True),
    shell:
        "(python -m lorarank analyze {params.runs} --out {params.out:q}) > {log:q} 2>&1"


rule summarize_results:
    input:
        evaluations=summary_evaluations,
        selections=summary_selections,
        gradients="results/{experiment}/summary/gradient_stats.json",
    output:
        csv=report("results/{experiment}/summary/results.csv", caption="../report/results.rst", category="Accuracy"),
        md="results/{experiment}/summary/results.md",
        verdicts="results/{experiment}/summary/verdicts.json",  # each claim's per-seed values: combine_bases reads them
        figure=report(
            "results/{experiment}/summary/figures/accuracy.png", caption="../report/accuracy.rst", category="Accuracy"
        ),
        rates=report(
            expand("results/{{experiment}}/summary/figures/{name}.png", name=SELECTION_FIGURES),
            caption="../report/selection.rst",
            category="Accuracy",
        ),
    log:
        "logs/{experiment}/summarize_results.log",
    benchmark:
        "benchmarks/{experiment}/summarize_results.tsv"
    conda:
        environment("summarize")
    container:
        image("summarize")
    params:
        code=CODE["summarize"],
        evaluations=summary_args,
        selections=selection_args,
        settings=settings_flags("summarize_results"),
        out=subpath(output.csv, parent=True),
    shell:
        "(python -m lorarank summarize {params.evaluations} {params.selections} --gradient-stats {input.gradients:q}"
        " {params.settings}"
        " --out {params.out:q}) > {log:q} 2>&1"


# With several base models (`warmup.seeds`): the verdicts and accuracies across them, the base model as the unit.
if len(BASES) > 1:

    localrules:
        combine_bases,

    rule combine_bases:
        input:
            verdicts=expand("results/{base}/summary/verdicts.json", base=BASES),
            results=expand("results/{base}/summary/results.csv", base=BASES),
        output:
            md="results/{experiment}/bases/results.md",
            csv="results/{experiment}/bases/results.csv",
            verdicts="results/{experiment}/bases/verdicts.json",
        log:
            "logs/{experiment}/combine_bases.log",
        benchmark:
            "benchmarks/{experiment}/combine_bases.tsv"
        wildcard_constraints:
            experiment=re.escape(EXPERIMENT),
        conda:
            environment("combine-bases")
        container:
            image("combine-bases")
        params:
            code=CODE["combine-bases"],
            bases=lambda wildcards, input: grouped("--base", zip(BASES, input.verdicts, input.results)),
            out=subpath(output.md, parent=True),
        shell:
            "(python -m lorarank combine-bases {params.bases} --out {params.out:q}) > {log:q} 2>&1"
