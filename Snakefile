# hvpl: continual video instance segmentation experiments, from data to summary table.
#
#   snakemake --cores 8 all                                   # config/config.yaml (synth_4-2)
#   snakemake --cores 2 --configfile config/smoke.yaml all    # the few-minute smoke run
#   snakemake --profile slurm all                             # one SLURM job per step / evaluation
#
# Rules live in workflow/rules/ (data, train, evaluate, report); see docs/workflow.md.

from snakemake.utils import min_version, validate

min_version("8.0")


# config/config.yaml is the default configuration; --configfile FILE replaces it rather than being merged into
# it (Snakemake's merge would carry e.g. the default's overrides or data_roots into another config's runs).
# Keys a file leaves out take the schema's defaults.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/inputs.smk"
include: "workflow/rules/execution.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


clear_stale_locks()


onstart:
    write_run_marker()


onsuccess:
    remove_run_marker()


onerror:
    remove_run_marker()


rule all:
    """Every file of every configured (scenario, method, seed) (run_files: per step model, training log,
    predictions, metrics, OGC basis; forgetting), the summary table and plots: a deleted one is made again."""
    default_target: True
    input:
        [f for sc, m, s in runs() for f in run_files(sc, m, s)],
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/plots",
