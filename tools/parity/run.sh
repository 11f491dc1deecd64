#!/usr/bin/env bash
# Parity tool: the authors' HVPL (JiahuaDong/HVPL) vs this project's hvpl package, on CPU (docs/parity.md).
# One command: MIRROR=... bash tools/parity/run.sh   (from anywhere). Exit 0 = every difference is explained,
# 1 = not, 2 = setup.
# Env: PARITY_WORK (default /tmp/parity_work: sources, weights, probe outputs), PARITY_VENV (default /tmp/parity_venv),
#      MAIN (default: the project root this script lives in), MIRROR (required: the folder that holds
#      owner+name/repo bare git directories), PARITY_STEPS (default "0 1 2"), PARITY_OUT (default $PARITY_WORK/out);
#      PARITY_WEIGHT_SEED, PARITY_INPUT_SEED, PARITY_IMAGE_SIZE, PARITY_ORIG_SIZE ("HxW"), PARITY_FRAMES (probe_spec.py).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK=${PARITY_WORK:-/tmp/parity_work}; VENV=${PARITY_VENV:-/tmp/parity_venv}; MAIN=${MAIN:-$(cd "$HERE/../.." && pwd)}
STEPS=${PARITY_STEPS:-"0 1 2"}
[[ -n "${MIRROR:-}" ]] || { echo "set MIRROR to the folder holding JiahuaDong+HVPL/repo, sukjunhwang+VITA/repo, facebookresearch+detectron2/repo" >&2; exit 2; }
export MIRROR
OUT=${PARITY_OUT:-$WORK/out}
export PARITY_WORK="$WORK" PYTHONWARNINGS=ignore PYTHONDONTWRITEBYTECODE=1
mkdir -p "$WORK" "$OUT"

# 1. environment (CPU torch from PyPI; never torchvision: stubs/ stands in for it)
if [[ ! -x "$VENV/bin/python" ]]; then python3 -m venv "$VENV"; fi
if ! "$VENV/bin/python" -c "import torch, numpy, scipy, fvcore, einops, yaml, pycocotools, cloudpickle, omegaconf, packaging, pandas, matplotlib, tqdm" 2>/dev/null; then
  "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q numpy scipy fvcore einops pyyaml pycocotools cloudpickle omegaconf packaging pandas matplotlib tqdm
fi
if "$VENV/bin/python" -c "import torchvision" 2>/dev/null; then echo "torchvision is installed in $VENV: remove it (it breaks the CPU torch; stubs/ replace it)" >&2; exit 2; fi
PY="$VENV/bin/python"

# 2. third-party sources, assembled outside the repository
bash "$HERE/setup_sources.sh"

step() { echo; echo "== $*"; }
A() { (cd "$WORK" && "$PY" "$HERE/authors_side.py" "$@"); }
O() { (cd "$WORK" && PYTHONPATH="$MAIN" "$PY" "$HERE/ours_side.py" "$@"); }

if [[ "${1:-}" == "fixtures" ]]; then   # regenerate tests/data/parity/ (fixture_spec.py sizes, recipe.py values)
  FIX="$MAIN/tests/data/parity"; mkdir -p "$FIX" "$WORK/fixture"
  step "reduced fixture model: the authors' names and shapes"
  A fixture-keys --out "$WORK/fixture"
  for t in 0 1 2; do
    step "fixture step $t: recipe weights in the authors' naming, then the authors' outputs"
    O fixture-weights --task "$t" --keys-dir "$WORK/fixture" --out "$WORK/fixture/weights_step$t.pth"
    A fixture --task "$t" --weights "$WORK/fixture/weights_step$t.pth" --out "$WORK/fixture/fixture_step$t.pt"
    cp "$WORK/fixture/fixture_step$t.pt" "$FIX/fixture_step$t.pt"
  done
  ls -l "$FIX"
  exit 0
fi

step "tree_scan._C stand-in self-test (vs brute force and scipy)"
"$PY" "$HERE/selftest_tree_scan_C.py"

step "authors' model: state_dict names and shapes (steps 0, 1, 2 of 20-2)"
A keys --out "$OUT" --tasks 0 1 2

step "random weights in the authors' naming (detectron2 checkpoints)"
A weights --task 0 --out "$WORK/authors_step0.pth" --pkl "$WORK/authors_step0.pkl"
for t in $STEPS; do [[ $t == 0 ]] || A weights --task "$t" --out "$WORK/authors_step$t.pth"; done

step "key mapping through hvpl.engine.init_weights.vita_to_hvpl_name"
O keymap --keys-dir "$OUT" --out "$OUT"

step "real loading path: scenario.train.init_weights -> build_step_model -> load_init_weights"
O loadcheck --weights "$WORK/authors_step0.pth" "$WORK/authors_step0.pkl" --out "$OUT"

rm -f "$OUT"/parity_step*.json
for t in $STEPS; do
  step "authors' forward passes, step $t"
  A probes --task $t --weights "$WORK/authors_step$t.pth" --out "$WORK/probes_step$t.pt"
  step "re-implementation on the same weights and inputs, step $t"
  O compare --task $t --weights "$WORK/authors_step$t.pth" --probes "$WORK/probes_step$t.pt" --out "$OUT"
done

step "parity table"
set +e
O report --out "$OUT"
rc=$?
echo "tables and JSON: $OUT"
exit $rc
