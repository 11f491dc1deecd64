# Data: the synthetic benchmark (synthetic scenarios only) and the class-incremental split of each scenario.


rule synthesize:
    """The synthetic YouTube-VIS-layout dataset of a synthetic scenario (its data.root)."""
    output:
        json="resources/synth/{variant}/train.json",
        frames=directory("resources/synth/{variant}/train"),
    wildcard_constraints:
        # the scenario's name, or NAME@DIGEST for the config's synthetic overrides (common.smk synth_variant)
        variant="(" + "|".join(re.escape(sc) for sc in SCENARIOS) + ")(@[0-9a-f]{16})?",
    params:
        root=lambda wildcards, output: os.path.dirname(output.json),
        extra=synth_args,
        settings=synth_settings,  # the synthetic section (and overrides): an edit regenerates
    resources:
        **cluster_resources("synthesize"),
    log:
        f"{LOGS}/{{variant}}/synthesize.log",
    benchmark:
        f"{BENCH}/{{variant}}/synthesize.tsv"
    conda:
        "../../envs/hvpl.yaml"
    shell:
        # the scenario is the variant's name before "@" (common.smk synth_variant); not a param of its own, which
        # would change every existing job's params and regenerate the data of finished runs
        "variant={wildcards.variant}; hvpl synth --scenario ${{variant%%@*}} --out {params.root} {params.extra} "
        "> {log} 2>&1"


rule split:
    """The class-incremental split of one scenario: its folder holds classes.json, split_info.json,
    train_all.json, train_step{t}.json / test_step{t}.json per step (and with data.use_coco coco_step{t}.json,
    coco_all.json). A directory output because the number of step files depends on the scenario; downstream
    rules take the folder as input and name their file in the command."""
    input:
        lambda wildcards: split_inputs(scenario_of(wildcards.scenario)),
    output:
        directory(split_dir("{scenario}")),
    wildcard_constraints:
        scenario="|".join(re.escape(key) for key in SPLITS),
    params:
        root=lambda wildcards: data_root(scenario_of(wildcards.scenario)),
        extra=lambda wildcards: split_args(wildcards.scenario),
        settings=split_settings,  # the scenario file's data-side keys: an edit re-splits
    resources:
        **cluster_resources("split"),
    log:
        f"{LOGS}/{{scenario}}/split.log",
    benchmark:
        f"{BENCH}/{{scenario}}/split.tsv"
    conda:
        "../../envs/hvpl.yaml"
    shell:
        # the scenario is the folder's name before "@order" (common.smk split_key), in the shell for the same
        # reason as in synthesize; extra holds `--order K` for K >= 1
        "key={wildcards.scenario}; hvpl split --scenario ${{key%%@*}} --data-root {params.root} --out {output} "
        "{params.extra} > {log} 2>&1"
