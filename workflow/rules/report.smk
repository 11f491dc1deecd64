# Run-level forgetting and the cross-run summary (table + plots, in `snakemake --report`).


rule forgetting:
    """FAP/FAR1 (class- and task-wise), standard forgetting and AP old/new after every step of one run."""
    input:
        unpack(forgetting_inputs),
    output:
        f"{run_dir('{scenario}', '{method}', '{seed}')}/forgetting.json",
    params:
        classes=lambda wildcards: split_file(wildcards.scenario, "classes.json"),
    resources:
        **cluster_resources("forgetting"),
    log:
        f"{LOGS}/{{scenario}}/{{method}}/seed{{seed}}/forgetting.log",
    benchmark:
        f"{BENCH}/{{scenario}}/{{method}}/seed{{seed}}/forgetting.tsv"
    conda:
        "../../envs/hvpl.yaml"
    shell:
        "hvpl forgetting --metrics {input.metrics} --classes {params.classes} --out {output} > {log} 2>&1"


rule summarize:
    """One row per (scenario, method, seed, step) of the configured runs, and the plots."""
    input:
        summary_inputs(),
    output:
        csv=report(
            f"{RESULTS}/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
        ),
        plots=report(
            directory(f"{RESULTS}/plots"),
            patterns=["{name}.png"],
            caption="../report/plots.rst",
            category="Plots",
        ),
    params:
        results=lambda wildcards, output: os.path.dirname(output.csv),
        runs=[run_dir(sc, m, s) for sc, m, s in runs()],
    resources:
        **cluster_resources("summarize"),
    log:
        f"{LOGS}/summarize.log",
    benchmark:
        f"{BENCH}/summarize.tsv"
    conda:
        "../../envs/hvpl.yaml"
    shell:
        "hvpl summarize --results-dir {params.results} --out {output.csv} --plots-dir {output.plots} "
        "--runs {params.runs} > {log} 2>&1"
