"""Evaluation: the LSM paper's metrics, the evaluation harness and baselines.

    from openlsm.eval import EvalConfig, evaluate, write_metrics, print_table
    result = evaluate(EvalConfig(preset="tiny", scenes=2, resolution=32, baselines=("3dgs", "2d")))
    write_metrics(result, "eval/metrics.json"); print_table(result)

CLI: `openlsm eval --checkpoint PATH --data synthrooms:test --scenes 40 --out eval --baselines a,c`.
"""

from .baselines import BaselineUnavailable, GaussianFitConfig, optimize_gaussians, segment_2d, sfm_two_view
from .harness import EvalConfig, evaluate, print_table, write_metrics
from .metrics import (
    confusion_matrix,
    depth_metrics,
    image_metrics,
    json_safe,
    relative_pose_errors,
    rotation_error_deg,
    segmentation_scores,
    translation_angle_deg,
)
from .predict import Prediction, decode_labels, predict

__all__ = [
    "BaselineUnavailable",
    "EvalConfig",
    "GaussianFitConfig",
    "Prediction",
    "confusion_matrix",
    "decode_labels",
    "depth_metrics",
    "evaluate",
    "image_metrics",
    "json_safe",
    "optimize_gaussians",
    "predict",
    "print_table",
    "relative_pose_errors",
    "rotation_error_deg",
    "segment_2d",
    "segmentation_scores",
    "sfm_two_view",
    "translation_angle_deg",
    "write_metrics",
]
