"""Continual learning: methods, model growth between steps, orthogonal gradient correction."""
