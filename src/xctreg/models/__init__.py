"""Pose regression networks."""

from xctreg.models.regressor import VARIANTS, ModelConfig, PoseRegressor, attention_map

__all__ = ["VARIANTS", "ModelConfig", "PoseRegressor", "attention_map"]
