"""Model evaluation: leak-free splits (purged walk-forward, chronological) and their audit, ..."""

from clm.evaluation.splits import (
    AUDIT_SCHEMA,
    Fold,
    SplitConfig,
    assign_folds,
    chronological_split,
    fold_audit,
    make_folds,
    purged_walk_forward,
)
from clm.evaluation.costs import (
    COST_COLUMNS,
    FUNDING_SCHEMA,
    CostConfig,
    cost_summary,
    estimate_half_spread_bps,
    read_funding_rates,
    trade_costs,
)
from clm.evaluation.metrics import (
    BASELINES,
    STRATEGY_METRICS,
    accuracy,
    baseline_positions,
    brier_score,
    deflated_sharpe_ratio,
    directional_accuracy,
    evaluate_predictions,
    expected_calibration_error,
    expected_max_sharpe,
    f1,
    information_coefficient,
    mae,
    precision,
    probabilistic_sharpe_ratio,
    r2,
    rank_ic,
    recall,
    rmse,
    sharpe_moments,
    simulate_strategy,
    strategy_metrics,
    strategy_returns,
)
from clm.evaluation.gate import (
    EDGE_SCHEMA,
    OVERALL,
    GateConfig,
    RegimeGate,
    gate_table,
    learn_gate,
)
from clm.evaluation.consensus import (
    ACTIONS,
    CONSENSUS_COLUMNS,
    DECISION_LOG_COLUMNS,
    LEVELS,
    ConsensusConfig,
    consensus,
    decision_log,
    to_signal,
)
