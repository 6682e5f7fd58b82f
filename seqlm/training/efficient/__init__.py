"""Efficient-training options as trainer callbacks and a cost budget in FLOPs or reference
time; the study that compares them against a fully decayed baseline is
`seqlm.studies.efficiency`."""

from seqlm.training.efficient.layer_drop import (
    LayerDrop,
    LayerDropOptions,
    ProgressiveLayerDrop,
    pld_keep_probabilities,
    pld_theta,
)
from seqlm.training.efficient.reference_time import (
    CalibrationTable,
    CostBudget,
    CostMeter,
    CostModel,
    calibrate,
)
from seqlm.training.efficient.selective_backprop import (
    SelectiveBackprop,
    SelectiveBackpropOptions,
)
from seqlm.training.efficient.stacking import LayerStacking, StackingOptions, grow_blocks

__all__ = [
    "CalibrationTable",
    "CostBudget",
    "CostMeter",
    "CostModel",
    "LayerDrop",
    "LayerDropOptions",
    "LayerStacking",
    "ProgressiveLayerDrop",
    "SelectiveBackprop",
    "SelectiveBackpropOptions",
    "StackingOptions",
    "calibrate",
    "grow_blocks",
    "pld_keep_probabilities",
    "pld_theta",
]
