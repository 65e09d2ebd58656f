"""Evaluation by the book: ISO/IEC 19795-1 verification metrics, the LFW protocol,
DET curves and ISO/IEC 19795-10 demographic differentials.

Not part of the device pipeline: an auditor's and a researcher's instrument.
Scores and templates stay in memory; reports hold aggregates only.
See docs/evaluation.md.
"""

from importlib import import_module
from typing import Any

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
    "evaluate_lfw",
    "write_report",
]

_WHERE = {name: "fr_pbd.eval.metrics" for name in __all__}
_WHERE["evaluate_lfw"] = "fr_pbd.eval.lfw"
_WHERE["write_report"] = "fr_pbd.eval.report"


def __getattr__(name: str) -> Any:
    """Lazy: ``import fr_pbd.eval`` loads no numpy until a function is used."""
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'fr_pbd.eval' has no attribute {name!r}")
