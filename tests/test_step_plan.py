"""hvpl.engine.step_plan: a step >= 1 must use the previous step's scenario, prompts and model architecture."""
import copy

import pytest

from hvpl.config import load_run_config
from hvpl.engine.step_plan import check_prev_settings
from hvpl.utils.errors import HVPLError


def _prev(cfg: dict) -> dict:
    """The entries of a step-0 model_final.pth that the check reads."""
    return {"_path": "step0/model_final.pth", "scenario": copy.deepcopy(cfg["scenario"]),
            "model_config": copy.deepcopy(cfg["model"])}


def test_same_settings_pass_and_loss_or_inference_may_differ():
    cfg = load_run_config("synth_smoke", "hvpl")
    prev = _prev(cfg)
    check_prev_settings(cfg, prev)
    changed = load_run_config("synth_smoke", "hvpl", None, ["model.loss.mask_weight=2.0",
                                                             "model.inference.chunk_frames=2"])
    assert changed["model"]["loss"] != prev["model_config"]["loss"]
    assert changed["model"]["inference"] != prev["model_config"]["inference"]
    check_prev_settings(changed, prev)


@pytest.mark.parametrize("sets, message", [
    (["model.hidden_dim=32"], "model.hidden_dim: 64 there, 32 here"),
    (["model.frame_decoder.num_queries=8"], "model.frame_decoder.num_queries: 16 there, 8 here"),
    (["scenario.prompts_per_task=4"], "prompts_per_task is 2 there, 4 here"),
])
def test_a_different_architecture_or_prompt_count_is_refused(sets, message):
    prev = _prev(load_run_config("synth_smoke", "hvpl"))
    with pytest.raises(HVPLError, match=message):
        check_prev_settings(load_run_config("synth_smoke", "hvpl", None, sets), prev)


def test_a_model_of_another_scenario_is_refused():
    prev = _prev(load_run_config("synth_smoke", "hvpl"))
    with pytest.raises(HVPLError, match="a model of scenario 'synth_smoke', not 'synth_4-2'"):
        check_prev_settings(load_run_config("synth_4-2", "hvpl"), prev)
