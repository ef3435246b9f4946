# Helpers shared by the rule files: config lookups only, no paths built from strings here.

EXPERIMENT = config["experiment"]
ALLOC = config["allocation"]
# Strategies whose ranks need no gradient log; the profiled ones arrive with the training stage.
STATIC_STRATEGIES = ("uniform", "random", "manual")


def lora_configs():
    return expand(
        "results/{experiment}/lora/{strategy}.json",
        experiment=EXPERIMENT,
        strategy=[s for s in ALLOC["strategies"] if s in STATIC_STRATEGIES],
    )


def allocate_args(wildcards):
    """CLI flags for `lorarank allocate` from the config's allocation section."""
    s = wildcards.strategy
    args = [
        f"--budget {ALLOC['budget']}",
        f"--alpha-policy {ALLOC['alpha_policy']}",
        f"--granularity {ALLOC['granularity']}",
        f"--target-modules {','.join(ALLOC['target_modules'])}",
        f"--min-rank {ALLOC['min_rank']}",
    ]
    if ALLOC.get("alpha") is not None:
        args.append(f"--alpha {ALLOC['alpha']}")
    if s == "random":
        rnd = ALLOC["random"]
        args.append(f"--low {rnd['low']} --high {rnd['high']} --seed {rnd['seed']}")
    if s == "manual":
        args = [a for a in args if not a.startswith("--budget")]
        args.append(f"--ranks {','.join(str(r) for r in ALLOC['manual_ranks'])}")
    return " ".join(args)
