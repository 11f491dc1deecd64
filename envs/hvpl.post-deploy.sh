#!/usr/bin/env bash
# Run by Snakemake inside the freshly created envs/hvpl.yaml environment, from the workflow's working
# directory (the repository root): install hvpl itself without touching the conda-installed dependencies.
set -euo pipefail
python -m pip install --no-deps --no-build-isolation -e "$PWD"
