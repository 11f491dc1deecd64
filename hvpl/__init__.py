"""hvpl: a workbench for continual video instance segmentation (HVPL, ICCV 2025, and baselines)."""

__version__ = "0.1.0"
