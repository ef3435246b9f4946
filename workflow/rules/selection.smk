# Selection stage: an arm whose rate list has several rates (grpo.lr, sft.lr, allocation.adalora.lr_scale)
# ran at each on the selection seeds; this checkpoint chooses its rate from their validation evaluations
# (`lorarank select-rate`, the rule config `selection` names). It is a checkpoint so that what depends on
# the choice (the arm's seeds, their test evaluations, the arms profiled on it) is planned from its output:
# a new rate that is not chosen reruns nothing downstream.


checkpoint select_rate:
    input:
        unpack(selection_inputs),
    output:
        SELECT,
    log:
        "logs/{experiment}/select_rate/{regime}/{strategy}/{policy}.log",
    benchmark:
        "benchmarks/{experiment}/select_rate/{regime}/{strategy}/{policy}.tsv"
    conda:
        environment("select-rate")
    container:
        image("select-rate")
    params:
        code=CODE["select-rate"],
        evaluations=lambda wildcards, input: " ".join(
            f"--eval {shlex.quote(f)}" for f in getattr(input, "evaluations", [])
        ),
        metric=SELECTION["metric"],
        rule=SELECTION["rule"],
    shell:
        "(python -m lorarank select-rate --manifest {input.manifest:q} {params.evaluations}"
        " --metric {params.metric:q} --rule {params.rule:q} --out {output:q}) > {log:q} 2>&1"
