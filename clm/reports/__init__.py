"""Reports people read: the training-run report, its plots and its deterministic narrative."""

from clm.reports.narrative import (
    Narrative,
    Narrator,
    market_narrative,
    performance_summary,
    risk_assessment,
    trade_rationale,
    trade_verdict,
)
from clm.reports.training_report import TrainingReport, build_training_report, check_run_id

__all__ = [
    "Narrative",
    "Narrator",
    "TrainingReport",
    "build_training_report",
    "check_run_id",
    "market_narrative",
    "performance_summary",
    "risk_assessment",
    "trade_rationale",
    "trade_verdict",
]
