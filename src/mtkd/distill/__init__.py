"""Distillation: cached teachers, KD losses, teacher weightings, objectives."""
