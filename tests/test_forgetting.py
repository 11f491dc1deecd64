"""Forgetting: the worked example of protocol.md Section 4 and other hand-computed values."""
from __future__ import annotations

import json

import pytest

from hvpl.evaluation.forgetting import compute_forgetting, forgetting_files
from hvpl.utils.errors import HVPLError

STEPS = [[1, 2], [3], [4]]
# per-class AP after each step (protocol.md worked example); AR1 = AP / 2 for a second, independent check
WORKED = [{1: .8, 2: .6}, {1: .6, 2: .6, 3: .9}, {1: .4, 2: .0, 3: .45, 4: .7}]


def metrics(step, ap, ar1=None, per_task=None, ap_all=0.5, old_new=None):
    ar1 = ar1 if ar1 is not None else {c: v / 2 for c, v in ap.items()}
    m = {"stats": {"AP": ap_all}, "per_class": {str(c): {"AP": ap[c], "AR1": ar1[c]} for c in ap}, "step": step}
    if per_task is not None:
        m["per_task"] = {str(t): {"AP": v, "AR1": v} for t, v in per_task.items()}
    if old_new is not None:
        m["AP_old"], m["AP_new"] = old_new
    return m


def write_run(tmp_path, metric_list, steps=STEPS):
    paths = []
    for m in metric_list:
        p = tmp_path / f"step{m['step']}" / "metrics.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(m))
        paths.append(p)
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"steps": steps}))
    return paths, classes


def test_worked_example(tmp_path):
    paths, classes = write_run(tmp_path, [metrics(t, ap) for t, ap in enumerate(WORKED)])
    out = tmp_path / "forgetting.json"
    res = forgetting_files(paths, classes, out)
    assert json.loads(out.read_text()) == res
    s0, s1, s2 = res["per_step"]
    assert [s["step"] for s in res["per_step"]] == [0, 1, 2]
    assert all(s0[k] is None for k in ("FAP", "FAR1", "FAP_task", "FAR1_task", "F_AP"))
    assert s2["FAP"] == pytest.approx(0.416667, abs=1e-6)
    assert s2["F_AP"] == pytest.approx(0.483333, abs=1e-6)
    assert s1["FAP"] == pytest.approx(0.125)
    # ratios are scale-free: AR1 = AP / 2 gives the same FAR1
    assert s2["FAR1"] == pytest.approx(s2["FAP"])
    # F_AP after step 1: class 1: .8 - .6, class 2: .6 - .6
    assert s1["F_AP"] == pytest.approx(0.1)


def test_far1_comes_from_ar1_not_ap():
    """AR1 values not proportional to AP: FAR1 (class- and task-wise) must follow AR1 alone."""
    ar1 = [{1: .5, 2: .4}, {1: .5, 2: .1, 3: .6}, {1: .25, 2: .4, 3: .6, 4: .3}]
    res = compute_forgetting([metrics(t, ap, ar1[t]) for t, ap in enumerate(WORKED)], STEPS)["per_step"]
    # after step 2, old classes 1, 2, 3 with n = 2, 2, 1: (.5-.25)/.5/2, max(0, .4-.4), (.6-.6)
    assert res[2]["FAR1"] == pytest.approx((.25 / .5 / 2 + 0 + 0) / 3)
    assert res[1]["FAR1"] == pytest.approx((0 + (.4 - .1) / .4) / 2)
    assert res[2]["FAP"] == pytest.approx(0.416667, abs=1e-6)                    # AP side unchanged
    # task-wise from class means: task 0 AR1 (.45, .325), task 1 (.6, .6)
    assert res[2]["FAR1_task"] == pytest.approx(((.45 - .325) / .45 / 2 + 0) / 2)


def test_task_wise_from_class_means_and_per_task():
    # no per_task: task value = mean of its classes. task 0: (.7, .6, .2), task 1: (.9, .9, .45)
    res = compute_forgetting([metrics(t, ap) for t, ap in enumerate(WORKED)], STEPS)["per_step"]
    expected = ((.7 - .2) / .7 / 2 + (.9 - .45) / .9 / 1) / 2
    assert res[2]["FAP_task"] == pytest.approx(expected)
    # with per_task entries those are used instead
    tasks = [{0: .5}, {0: .4, 1: .8}, {0: .1, 1: .2, 2: .6}]
    res = compute_forgetting([metrics(t, ap, per_task=tasks[t]) for t, ap in enumerate(WORKED)], STEPS)["per_step"]
    assert res[1]["FAP_task"] == pytest.approx((.5 - .4) / .5)
    assert res[2]["FAP_task"] == pytest.approx(((.5 - .1) / .5 / 2 + (.8 - .2) / .8) / 2)


def test_zero_initial_value_contributes_zero_and_undefined_is_skipped():
    history = [{1: 0.0, 2: .5, 3: -1.0}, {1: 0.0, 2: .25, 3: .3, 4: .9}]
    res = compute_forgetting([metrics(t, ap) for t, ap in enumerate(history)], [[1, 2, 3], [4]])["per_step"]
    # class 1: a = 0 -> 0; class 2: (.5 - .25) / .5 = .5; class 3: a undefined -> left out
    assert res[1]["FAP"] == pytest.approx(0.25)
    # standard forgetting: class 1: 0, class 2: .25, class 3: no earlier defined value -> left out
    assert res[1]["F_AP"] == pytest.approx(0.125)


def test_improvement_is_not_forgetting_but_standard_is_signed():
    res = compute_forgetting([metrics(0, {1: .2, 2: .4}), metrics(1, {1: .5, 2: .4, 3: .1})],
                             [[1, 2], [3]])["per_step"]
    assert res[1]["FAP"] == 0.0
    assert res[1]["F_AP"] == pytest.approx((-.3 + 0.0) / 2)


def test_old_new_all():
    ms = [metrics(0, WORKED[0], ap_all=.7, old_new=(-1.0, .7)), metrics(1, WORKED[1], ap_all=.65)]
    res = compute_forgetting(ms, STEPS)["per_step"]
    assert (res[0]["AP_old"], res[0]["AP_new"], res[0]["AP_all"]) == (-1.0, .7, .7)
    # no AP_old/AP_new in the metrics: mean of per-class APs of old (1, 2) and new (3) classes
    assert res[1]["AP_old"] == pytest.approx(.6) and res[1]["AP_new"] == pytest.approx(.9)
    assert res[1]["AP_all"] == .65


def test_joint_single_step_has_null_forgetting(tmp_path):
    paths, classes = write_run(tmp_path, [metrics(2, WORKED[2])])
    res = forgetting_files(paths, classes, tmp_path / "f.json")
    assert len(res["per_step"]) == 1 and res["per_step"][0]["step"] == 2
    assert res["per_step"][0]["FAP"] is None and res["per_step"][0]["F_AP"] is None
    assert res["per_step"][0]["AP_all"] == 0.5


def test_bad_inputs(tmp_path):
    paths, classes = write_run(tmp_path, [metrics(0, WORKED[0]), metrics(2, WORKED[2])])
    with pytest.raises(HVPLError, match="step2/metrics.json"):
        forgetting_files(paths, classes, tmp_path / "f.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"AP": 1}))
    with pytest.raises(HVPLError, match="bad.json"):
        forgetting_files([bad], classes, tmp_path / "f.json")
    assert not (tmp_path / "f.json").exists()


@pytest.mark.parametrize("edit, where, message", [
    (lambda ms, c: ms[0].update(step="x"), "stepx/metrics.json", "step: x is outside"),
    (lambda ms, c: ms[1]["stats"].pop("AP"), "step1/metrics.json", "stats.AP: None must be a number"),
    (lambda ms, c: ms[1]["stats"].update(AP="0.5"), "step1/metrics.json", "stats.AP: '0.5' must be a number"),
    (lambda ms, c: ms[1].update(per_class=[1]), "step1/metrics.json", "per_class: must be a mapping"),
    (lambda ms, c: ms[1]["per_class"].update({"1": 5}), "step1/metrics.json", "per_class.1: 5 must be"),
    (lambda ms, c: ms[1]["per_class"]["1"].update(AP="x"), "step1/metrics.json", "per_class.1: .* must be"),
    (lambda ms, c: c.__setitem__(0, [[1], 2]), "classes.json", "steps: must be a non-empty list of lists"),
])
def test_malformed_metrics_or_classes_are_named(tmp_path, edit, where, message):
    """Loadable JSON of the wrong shape: the file and entry named, not a TypeError/KeyError traceback."""
    ms = [metrics(t, ap) for t, ap in enumerate(WORKED)]
    steps = [list(s) for s in STEPS]
    edit(ms, steps)
    paths, classes = write_run(tmp_path, ms, steps)
    with pytest.raises(HVPLError, match=f"{where}: {message}"):
        forgetting_files(paths, classes, tmp_path / "f.json")
    assert not (tmp_path / "f.json").exists()
