"""Evaluation by the book: ISO/IEC 19795-1 verification metrics, the LFW protocol,
DET curves and ISO/IEC 19795-10 demographic differentials.

Not part of the device pipeline: an auditor's and a researcher's instrument.
Scores and templates stay in memory; reports hold aggregates only.
See docs/evaluation.md.
"""

from fr_pbd.eval.metrics import (
    TARGET_FMRS,
    EER,
    ExactScores,
    OperatingPoint,
    StreamedScores,
    TenFoldResult,
    det_curve,
    eer,
    fnmr_at_fmr,
    fnmr_at_fmrs,
    kfold_accuracy,
    wilson_interval,
)

__all__ = [
    "TARGET_FMRS",
    "EER",
    "ExactScores",
    "OperatingPoint",
    "StreamedScores",
    "TenFoldResult",
    "det_curve",
    "eer",
    "fnmr_at_fmr",
    "fnmr_at_fmrs",
    "kfold_accuracy",
    "wilson_interval",
]
