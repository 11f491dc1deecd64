"""Forgetting of one run from its per-step metrics.json files (protocol.md Section 4).

After every step k >= 1, treating k as the final step:

- FAP / FAR1 (paper definition, class-wise): over the classes c introduced at a step s_c < k,
  mean of max(0, a_c - f_c) / a_c / n_c with a_c = per-class AP (AR1) after step s_c, f_c = after step k,
  n_c = k - s_c. Classes with a_c = 0 contribute 0 (the authors' code counts them as fully forgotten);
  classes whose value is undefined (-1: no test video) at s_c or k are left out of the mean.
- FAP_task / FAR1_task: the same with tasks instead of classes, a_i / f_i = the ``per_task`` AP (AR1) of task i
  (videos containing task-i classes, categories restricted to task i); when a metrics file has no ``per_task``,
  the task value is the mean of its classes' defined per-class values.
- F_AP (Chaudhry et al. 2018): mean over old classes of (max over steps s_c..k-1 of AP_c) - AP_c after step k
  (not clipped: negative means the class improved).
- BWT / BWT_AR1: standard backward transfer from the task matrix (:mod:`hvpl.evaluation.task_matrix`).
- AP_old / AP_new / AP_all: the metrics' ``AP_old``, ``AP_new`` and ``stats.AP``.

All values are fractions; forgetting is null at step 0 and for runs that do not start at step 0 (joint runs
have a single step N-1).
"""
from __future__ import annotations

from hvpl.data.ytvis import is_id
from hvpl.evaluation.task_matrix import backward_transfer, task_matrix, write_matrix_csv
from hvpl.utils.errors import HVPLError
from hvpl.utils.io import atomic_write_json, read_json

FORGETTING_KEYS = ("FAP", "FAR1", "FAP_task", "FAR1_task", "F_AP", "BWT", "BWT_AR1")


def _defined(x) -> bool:
    return x is not None and x > -1


def _mean(values: list):
    return sum(values) / len(values) if values else None


def paper_forgetting(first: dict, final: dict, intro: dict, k: int):
    """Mean of max(0, a - f) / a / n over the units (classes or tasks) introduced before step k.

    ``first[u]`` = value after the unit's introduction, ``final[u]`` = value after step k, ``intro[u]`` = s_u.
    Returns None when no unit has defined values.
    """
    terms = []
    for unit, s in intro.items():
        if s >= k:
            continue
        a, f = first.get(unit), final.get(unit)
        if not (_defined(a) and _defined(f)):
            continue
        terms.append(max(0.0, a - f) / a / (k - s) if a > 0 else 0.0)
    return _mean(terms)


def standard_forgetting(history: list, intro: dict, k: int):
    """Chaudhry forgetting after step k; ``history[j]`` = {class: AP after step j} for j = 0..k."""
    terms = []
    for c, s in intro.items():
        if s >= k or not _defined(history[k].get(c)):
            continue
        earlier = [history[j].get(c) for j in range(s, k) if _defined(history[j].get(c))]
        if earlier:
            terms.append(max(earlier) - history[k][c])
    return _mean(terms)


def _per_class(metrics: dict, key: str) -> dict:
    return {int(c): v[key] for c, v in metrics.get("per_class", {}).items()}


def _mean_defined(per_class: dict, cats) -> float:
    """Mean of the defined values of ``per_class`` ({class: value}) over the classes ``cats``; -1.0 if none."""
    vals = [per_class[c] for c in cats if _defined(per_class.get(c))]
    return _mean(vals) if vals else -1.0


def _per_task(metrics: dict, key: str, steps: list) -> dict:
    """{task: value}: the metrics' per_task entry, else the mean of the task's defined per-class values."""
    if "per_task" in metrics:
        return {int(t): v[key] for t, v in metrics["per_task"].items()}
    per_class = _per_class(metrics, key)
    return {task: _mean_defined(per_class, cats) for task, cats in enumerate(steps)}


def _old_new(metrics: dict, steps: list, step: int) -> tuple:
    """(AP_old, AP_new) from the metrics, else the mean of the defined per-class APs (-1 if none)."""
    if "AP_old" in metrics and "AP_new" in metrics:
        return metrics["AP_old"], metrics["AP_new"]
    per_class = _per_class(metrics, "AP")
    return _mean_defined(per_class, [c for t in steps[:step] for c in t]), _mean_defined(per_class, steps[step])


def compute_forgetting(metrics_list: list, steps: list) -> dict:
    """``metrics_list[i]`` = metrics dict of the i-th step of a run (steps consecutive); see module docstring."""
    run_steps = [m["step"] for m in metrics_list]
    consecutive = run_steps == list(range(len(run_steps)))
    class_intro = {c: t for t, cats in enumerate(steps) for c in cats}
    task_intro = {t: t for t in range(len(steps))}
    hist = {key: [_per_class(m, key) for m in metrics_list] for key in ("AP", "AR1")}
    task_hist = {key: [_per_task(m, key, steps) for m in metrics_list] for key in ("AP", "AR1")}
    matrix = {key: task_matrix(metrics_list, steps, key) for key in ("AP", "AR1")}
    per_step = []
    for i, (m, k) in enumerate(zip(metrics_list, run_steps)):
        ap_old, ap_new = _old_new(m, steps, k)
        entry = {"step": k, **dict.fromkeys(FORGETTING_KEYS)}
        if consecutive and k >= 1:
            first = {key: {c: hist[key][s].get(c) for c, s in class_intro.items() if s <= k} for key in hist}
            first_t = {key: {t: task_hist[key][t].get(t) for t in range(k + 1)} for key in hist}
            entry.update(FAP=paper_forgetting(first["AP"], hist["AP"][i], class_intro, k),
                         FAR1=paper_forgetting(first["AR1"], hist["AR1"][i], class_intro, k),
                         FAP_task=paper_forgetting(first_t["AP"], task_hist["AP"][i], task_intro, k),
                         FAR1_task=paper_forgetting(first_t["AR1"], task_hist["AR1"][i], task_intro, k),
                         F_AP=standard_forgetting(hist["AP"], class_intro, k),
                         BWT=backward_transfer(matrix["AP"], run_steps, k),
                         BWT_AR1=backward_transfer(matrix["AR1"], run_steps, k))
        entry.update(AP_old=ap_old, AP_new=ap_new, AP_all=m["stats"]["AP"])
        per_step.append(entry)
    return {"per_step": per_step, "zero_initial_value": "contributes 0 (the authors' code counts it as 100%)"}


def _is_value(x) -> bool:
    """A metric: a number (-1 where the evaluator had nothing to score) or null."""
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def _check_metrics(m: dict, path) -> None:
    """The entries forgetting reads: stats.AP a number, per_class a mapping of {AP, AR1} numbers or null."""
    if not _is_value(m["stats"].get("AP")) or m["stats"].get("AP") is None:
        raise HVPLError(f"{path}: stats.AP: {m['stats'].get('AP')!r} must be a number")
    if not isinstance(m["per_class"], dict):
        raise HVPLError(f"{path}: per_class: must be a mapping of category id -> {{AP, AR1}}")
    for cid, entry in m["per_class"].items():
        if not isinstance(entry, dict) or not all(_is_value(entry.get(k)) for k in ("AP", "AR1")):
            raise HVPLError(f"{path}: per_class.{cid}: {entry!r} must be {{'AP': number, 'AR1': number}}")


def _load(metrics_paths: list, steps: list) -> list:
    out = []
    for i, path in enumerate(metrics_paths):
        m = read_json(path)
        if not isinstance(m, dict) or not isinstance(m.get("stats"), dict) or "per_class" not in m:
            raise HVPLError(f"{path}: not a metrics.json of 'hvpl evaluate' (needs 'stats' and 'per_class')")
        _check_metrics(m, path)
        m.setdefault("step", i)
        if not isinstance(m["step"], int) or isinstance(m["step"], bool) or not 0 <= m["step"] < len(steps):
            raise HVPLError(f"{path}: step: {m['step']} is outside the {len(steps)} steps of the classes file")
        out.append(m)
    for prev, cur, path in zip(out, out[1:], metrics_paths[1:]):
        if cur["step"] != prev["step"] + 1:
            raise HVPLError(f"{path}: step: {cur['step']} does not follow step {prev['step']}; "
                            "give the metrics of consecutive steps in order")
    return out


def forgetting_files(metrics_paths: list, classes_path, out_path, matrix_path=None) -> dict:
    """Read the run's metrics.json files (steps in order) and classes.json; write forgetting.json (and with
    ``matrix_path`` the task matrix, matrix.csv) atomically."""
    classes = read_json(classes_path)
    steps = classes.get("steps") if isinstance(classes, dict) else None
    if (not isinstance(steps, list) or not steps or not all(isinstance(s, list) for s in steps)
            or not all(is_id(c) for s in steps for c in s)):
        raise HVPLError(f"{classes_path}: steps: must be a non-empty list of lists of category ids")
    if not metrics_paths:
        raise HVPLError("forgetting: no metrics files given")
    metrics = _load(list(metrics_paths), steps)
    result = compute_forgetting(metrics, steps)
    if matrix_path is not None:
        write_matrix_csv(matrix_path, metrics, steps)
    atomic_write_json(out_path, result)
    return result
