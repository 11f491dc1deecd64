# hvpl: continual video instance segmentation experiments, from data to summary table.
#
#   snakemake --cores 8 all                                   # config/config.yaml (synth_4-2)
#   snakemake --cores 2 all --configfile config/smoke.yaml    # the few-minute smoke run (target first:
#                                                             # --configfile takes several files)
#   snakemake --profile slurm all                             # one SLURM job per step / evaluation
#
# Rules live in workflow/rules/ (data, train, evaluate, report); see docs/workflow.md.

import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("8.0")

sys.path.insert(0, str(Path(workflow.basedir)))  # the repository's hvpl package, even without `pip install -e`

from hvpl.config import load_yaml
from hvpl.utils.errors import HVPLError
from hvpl.utils.schema import schema_problem

DEFAULT_CONFIG = "config/config.yaml"
CONFIG_SCHEMA = "workflow/schemas/config.schema.yaml"


# config/config.yaml is the default configuration; --configfile FILE replaces it rather than being merged into
# it (Snakemake's merge would carry e.g. the default's overrides or data_roots into another config's runs).
# Keys a file leaves out take the schema's defaults.
if not workflow.overwrite_configfiles:
    try:  # read first: Snakemake's own message for a YAML error names neither the file nor the line
        load_yaml(DEFAULT_CONFIG)   # relative to the working directory, as the directive reads it
    except HVPLError as exc:
        raise WorkflowError(str(exc)) from None

    configfile: DEFAULT_CONFIG


# Snakemake's validation error prints the failing part of the schema (up to ~100 lines): restate it in one line
# naming the config file(s) and the key
try:
    validate(config, CONFIG_SCHEMA)
except WorkflowError:
    problem = schema_problem(config, Path(workflow.basedir) / CONFIG_SCHEMA)
    if problem is None:
        raise
    files = ", ".join(map(str, workflow.overwrite_configfiles or [DEFAULT_CONFIG]))
    extra = " (with --config)" if workflow.config_settings.config else ""
    raise WorkflowError(f"{files}{extra}: {problem}") from None


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/inputs.smk"
include: "workflow/rules/execution.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/visualize.smk"


clear_stale_locks()


onstart:
    write_run_marker()


onsuccess:
    remove_run_marker()


onerror:
    remove_run_marker()


rule all:
    """Every file of every configured (scenario, method, seed) (run_files: per step model, training log,
    predictions, metrics, OGC basis; forgetting, task matrix), the summary table and plots: a deleted one is made
    again; and the overlay grids (visualize; not an input of the summary)."""
    default_target: True
    input:
        [f for sc, m, s in runs() for f in run_files(sc, m, s)],
        f"{RESULTS}/summary.csv",
        f"{RESULTS}/plots",
        visual_outputs(),
