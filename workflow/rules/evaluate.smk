# Evaluation of every trained step (runs while the next step trains).


rule evaluate:
    """Step t's model over the split's test_step{t}.json: predictions.json, then metrics.json with the
    per-task and old/new breakdowns of the split's classes.json."""
    input:
        unpack(evaluate_inputs),
    output:
        predictions=f"{step_dir('{scenario}', '{method}', '{seed}', '{step}')}/predictions.json",
        metrics=f"{step_dir('{scenario}', '{method}', '{seed}', '{step}')}/metrics.json",
    params:
        test_json=lambda wildcards: split_file(wildcards.scenario, f"test_step{wildcards.step}.json"),
        classes=lambda wildcards: split_file(wildcards.scenario, "classes.json"),
        compute=compute_args(),
        claim=gpu_claim,
    threads: 1  # per-rule threads come from the profile (set-threads)
    resources:
        **cluster_resources("evaluate"),
    log:
        f"{LOGS}/{{scenario}}/{{method}}/seed{{seed}}/evaluate_step{{step}}.log",
    benchmark:
        f"{BENCH}/{{scenario}}/{{method}}/seed{{seed}}/evaluate_step{{step}}.tsv"
    conda:
        "../../envs/hvpl.yaml"
    shell:
        "({params.claim}hvpl predict --model {input.model} --test-json {params.test_json} --out {output.predictions} "
        "{params.compute} --threads {threads} "
        "&& hvpl evaluate --gt {params.test_json} --results {output.predictions} --out {output.metrics} "
        f"--classes {{params.classes}} --step {{wildcards.step}}{tensorboard_flag()}) > {{log}} 2>&1"
