# Run-level forgetting and the cross-run summary (table + plots, in `snakemake --report`).


rule forgetting:
    """FAP/FAR1 (class- and task-wise), standard forgetting, BWT and AP old/new after every step of one run, and
    its task matrix R[i][j] (AP and AR1 of task j after step i)."""
    input:
        unpack(forgetting_inputs),
    output:
        forgetting=f"{run_dir('{scenario}', '{method}', '{seed}')}/forgetting.json",
        matrix=f"{run_dir('{scenario}', '{method}', '{seed}')}/matrix.csv",
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
        "hvpl forgetting --metrics {input.metrics} --classes {params.classes} --out {output.forgetting} "
        "--matrix {output.matrix} > {log} 2>&1"


rule summarize:
    """One row per (scenario, order, method, seed, step) of the configured runs, the plots (results, task
    matrices, loss curves) and the paper-style tables per scenario."""
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
            category=plot_category,
        ),
        tables=report(
            directory(f"{RESULTS}/tables"),
            patterns=["{name}.md", "{name}.tex"],
            caption="../report/tables.rst",
            category="Tables",
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
        "--tables-dir {output.tables} --runs {params.runs} > {log} 2>&1"
