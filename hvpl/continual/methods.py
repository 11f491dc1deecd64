"""The methods the tool runs side by side (method.md Section 5), as feature switches on one engine."""
from __future__ import annotations

from dataclasses import dataclass

from hvpl.utils.errors import HVPLError


@dataclass(frozen=True)
class Method:
    name: str
    frame_prompts: bool      # add a frame prompt group per task; train only prompts + heads
    video_prompts: bool      # add a video prompt group per task (else the video decoder is frozen at t >= 1)
    ogc: bool                # orthogonal gradient correction on the newest frame prompt content
    context: bool            # tree-scan video context encoder in the video decoder
    logit_manipulation: bool # ECLIPSE-style no-object logit manipulation at inference
    finetune: bool = False   # train every weight at every step
    joint: bool = False      # one step on all classes
    ogc_authors: bool = False  # OGC as the authors' code computes it (sample space; hvpl.continual.ogc_authors)

    @property
    def base_variant(self) -> str:
        """Methods with the same base variant train an identical step 0 (the workflow shares it)."""
        if self.joint:
            return "joint"
        return "context" if self.context else "no_context"


METHODS = {
    m.name: m
    for m in (
        Method("hvpl", True, True, True, True, True),
        Method("hvpl_no_ogc", True, True, False, True, True),
        Method("hvpl_ogc_authors", True, True, True, True, True, ogc_authors=True),
        Method("hvpl_no_video_prompts", True, False, True, True, True),
        Method("hvpl_no_context", True, True, True, False, True),
        Method("eclipse", True, False, False, True, True),
        Method("finetune", False, False, False, True, False, finetune=True),
        Method("joint", False, False, False, True, False, joint=True),
    )
}


def get_method(method: Method | str) -> Method:
    """The Method named ``method`` (HVPLError if unknown); a Method is returned unchanged."""
    if isinstance(method, Method):
        return method
    if method not in METHODS:
        raise HVPLError(f"unknown method '{method}'; known: {', '.join(METHODS)}")
    return METHODS[method]
