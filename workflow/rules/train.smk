# Training: one rule for every continual step (wildcard {step}), the shared step 0, and the OGC memory.


rule train:
    """Step t of one run. Step t-1's model (t >= 1), step t's OGC basis (methods with OGC). Checkpoints go
    to the undeclared sibling folder checkpoints/step{t}/, so a killed job resumes from them."""
    input:
        unpack(train_inputs),
    # A method's own step0/ comes from share_step0: this rule makes step 0 only in the _base_ folders. (A
    # constraint, not a ruleorder, because a cluster job reparses with --allowed-rules train only.)
    wildcard_constraints:
        method=rf"{BASE_PREFIX}[a-z_]+|[A-Za-z0-9_]+(?=/seed\d+/step[1-9])",
    output:
        model=f"{step_dir('{scenario}', '{method}', '{seed}', '{step}')}/model_final.pth",
        train_log=f"{step_dir('{scenario}', '{method}', '{seed}', '{step}')}/train_log.jsonl",
    params:
        config=lambda wildcards: hvpl_config_args(wildcards.scenario, wildcards.method, wildcards.step),
        compute=compute_args(),
        settings=train_settings,  # scenario + model file settings this step reads: an edit retrains
        train_json=train_json,
        prev=lambda wildcards, input: optional_args(input, prev_model="prev-model", ogc_basis="ogc-basis"),
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
        ckpt_dir=lambda wildcards: ckpt_dir(wildcards.scenario, wildcards.method, wildcards.seed, wildcards.step),
        launch=train_launcher,
    threads: 1  # per-rule threads come from the profile (set-threads)
    resources:
        **cluster_resources("train"),
    priority: 10
    log:
        f"{LOGS}/{{scenario}}/{{method}}/seed{{seed}}/train_step{{step}}.log",
    benchmark:
        f"{BENCH}/{{scenario}}/{{method}}/seed{{seed}}/train_step{{step}}.tsv"
    conda:
        "../../envs/hvpl.yaml"
    shell:
        "{params.launch} {params.config} {params.compute} --step {wildcards.step} "
        "--seed {wildcards.seed} --train-json {params.train_json} --out-dir {params.out_dir} {params.prev} "
        f"--ckpt-dir {{params.ckpt_dir}}{tensorboard_flag()} > {{log}} 2>&1 "
        "|| {{ echo 'hvpl train failed, see the log: {log}' >&2; tail -n 20 {log} >&2; exit 1; }}"


rule share_step0:
    """A method's step 0 = its base variant's shared step 0 (the model records this method's name)."""
    input:
        unpack(base_step0),
    output:
        model=f"{step_dir('{scenario}', '{method}', '{seed}', 0)}/model_final.pth",
        train_log=f"{step_dir('{scenario}', '{method}', '{seed}', 0)}/train_log.jsonl",
    wildcard_constraints:
        method="|".join(METHODS),
    resources:
        **cluster_resources("share_step0"),
    log:
        f"{LOGS}/{{scenario}}/{{method}}/seed{{seed}}/share_step0.log",
    benchmark:
        f"{BENCH}/{{scenario}}/{{method}}/seed{{seed}}/share_step0.tsv"
    conda:
        "../../envs/hvpl.yaml"
    script:
        "../scripts/share_step0.py"



rule ogc_memory:
    """Step t's OGC basis from step t-1's model and training data (accumulating step t-1's basis)."""
    input:
        unpack(ogc_inputs),
    output:
        f"{step_dir('{scenario}', '{method}', '{seed}', '{step}')}/ogc_basis.pt",
    params:
        config=lambda wildcards: hvpl_config_args(wildcards.scenario, wildcards.method, wildcards.step, ogc=True),
        compute=compute_args(),
        settings=ogc_settings,
        train_json=lambda wildcards: split_file(wildcards.scenario, f"train_step{int(wildcards.step) - 1}.json"),
        prev=lambda wildcards, input: optional_args(input, prev_basis="prev-basis"),
        claim=gpu_claim,
    threads: 1  # per-rule threads come from the profile (set-threads)
    resources:
        **cluster_resources("ogc_memory"),
    priority: 10
    log:
        f"{LOGS}/{{scenario}}/{{method}}/seed{{seed}}/ogc_memory_step{{step}}.log",
    benchmark:
        f"{BENCH}/{{scenario}}/{{method}}/seed{{seed}}/ogc_memory_step{{step}}.tsv"
    conda:
        "../../envs/hvpl.yaml"
    shell:
        "{params.claim}hvpl ogc-memory {params.config} {params.compute} --threads {threads} --step {wildcards.step} "
        "--seed {wildcards.seed} --prev-model {input.prev_model} --train-json {params.train_json} "
        "{params.prev} --out {output} > {log} 2>&1"
