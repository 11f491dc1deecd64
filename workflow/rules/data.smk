# Data: the synthetic benchmark (synthetic scenarios only) and the class-incremental split of each scenario.


rule synthesize:
    """The synthetic YouTube-VIS-layout dataset of a synthetic scenario (its data.root)."""
    output:
        json="resources/synth/{scenario}/train.json",
        frames=directory("resources/synth/{scenario}/train"),
    params:
        root=lambda wildcards, output: os.path.dirname(output.json),
        extra=synth_args,
    resources:
        **cluster_resources("synthesize"),
    log:
        f"{LOGS}/{{scenario}}/synthesize.log",
    benchmark:
        f"{BENCH}/{{scenario}}/synthesize.tsv"
    conda:
        "../../envs/hvpl.yaml"
    shell:
        "hvpl synth --scenario {wildcards.scenario} --out {params.root} {params.extra} > {log} 2>&1"


# `hvpl split` writes a number of step files that depends on the scenario, so each configured scenario
# gets its own split rule (split_<scenario>) listing them all as outputs.
for _scenario in SCENARIOS:

    rule:
        name:
            f"split_{_scenario.replace('-', '_').replace('.', '_')}"
        input:
            split_inputs(_scenario),
        output:
            split_files(_scenario),
        params:
            scenario=_scenario,
            root=lambda wildcards, _sc=_scenario: data_root(_sc),
            out=lambda wildcards, output: os.path.dirname(output[0]),
            extra=split_args(_scenario),
        resources:
            **cluster_resources("split"),
        log:
            f"{LOGS}/{_scenario}/split.log",
        benchmark:
            f"{BENCH}/{_scenario}/split.tsv"
        conda:
            "../../envs/hvpl.yaml"
        shell:
            "hvpl split --scenario {params.scenario} --data-root {params.root} --out {params.out} "
            "{params.extra} > {log} 2>&1"
