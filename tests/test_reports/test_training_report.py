"""The training-run report, built from a lake the real training functions filled."""

import datetime as dt
import io
import json

import polars as pl
import pytest

from clm.data.ingest import CANDLES
from clm.data.sources.synthetic import SyntheticConfig, SyntheticSource
from clm.data.validation import validate_bars
from clm.evaluation.costs import CostConfig
from clm.evaluation.splits import SplitConfig
from clm.features import FeatureConfig, compute_features, select_features
from clm.features.store import FEATURES
from clm.labels import LabelConfig, build_labels
from clm.labels.store import LABELS
from clm.lake import Lake
from clm.regimes import classify_regimes
from clm.regimes.store import REGIMES
from clm.reports import Narrator, build_training_report, check_run_id
from clm.reports.narrative import DO_NOT_TRADE, cost_terms, trade_verdict
from clm.reports.tables import DECISION_TAIL, STRONG_CAP, cost_report, decision_sample
from clm.training import TrainingConfig
from clm.training.store import COSTS, DECISION_LOG, EVALUATION, build_consensus, evaluate_stored, train_engine

ENGINES = ("lightgbm_classifier", "lightgbm_regressor")
FAST = {"n_estimators": 40, "num_leaves": 8, "early_stopping_rounds": 10, "num_threads": 1}
CONFIG = TrainingConfig(horizon=12, split=SplitConfig(n_folds=3, embargo_bars=12))
WHEN = dt.datetime(2024, 2, 1, 12, 0, tzinfo=dt.UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """Candles -> features, labels, regimes -> two LightGBM engines -> evaluation -> consensus."""
    candles = validate_bars(SyntheticSource(SyntheticConfig(symbols=3, days=10, seed=5)).load().bars).candles
    selection = select_features(FeatureConfig(sets=("core31", "ta")), candles["symbol"].unique().to_list(), 300)
    features = compute_features(candles, selection, timeframe_seconds=300)
    labels = build_labels(candles.join(features.select("symbol", "timestamp", "atr_14"), on=["symbol", "timestamp"]),
                          LabelConfig(horizons=(1, 12)))
    regimes = classify_regimes(candles, timeframe_seconds=300)
    store = Lake(tmp_path_factory.mktemp("lake"))
    day = pl.col("timestamp").dt.date().alias("date")
    for table, frame in ((CANDLES, candles), (FEATURES, features), (LABELS, labels), (REGIMES, regimes)):
        store.write_table(table, frame.with_columns(day), ["date"])
    for engine in ENGINES:
        train_engine(store, engine, FAST, CONFIG)
    evaluate_stored(store, horizon=12)
    build_consensus(store)
    return store


@pytest.fixture(scope="module")
def report(lake):
    return build_training_report(lake, "run-1_a", generated_at=WHEN, narrator=Narrator(environ={}))


def test_every_file_is_written_and_every_png_reads_back(lake, report):
    import matplotlib.image as mpimg

    assert report.markdown_path == lake.root / "reports" / "training_run_run-1_a.md"
    assert report.markdown_path.read_text() == report.markdown
    folder = lake.root / "reports" / "training_run_run-1_a"
    assert report.directory == folder
    assert set(report.plots) == {"equity_curve", "calibration", "feature_importance"}
    for name, png in report.plots.items():
        path = folder / f"{name}.png"
        assert report.plot_paths[name] == path and path.read_bytes() == png
        assert png.startswith(PNG_SIGNATURE)
        image = mpimg.imread(io.BytesIO(png), format="png")
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
        assert f"](training_run_run-1_a/{name}.png)" in report.markdown  # linked by relative path
    for path in (report.metrics_path, report.cost_report_path, report.decision_log_path):
        assert path.parent == folder and path.is_file()
    assert json.loads(report.metrics_path.read_text())["run_id"] == "run-1_a"


def test_markdown_names_every_engine_baseline_and_section(report):
    md = report.markdown
    assert md.startswith("# Training run `run-1_a`")
    assert f"generated at**: {WHEN.isoformat()}" in md
    for engine in ENGINES:
        assert f"**{engine}**" in md
    for baseline in ("| flat |", "| buy-and-hold |", "| momentum |"):
        assert baseline in md
    for heading in ("## Strategies against the baselines", "## Prediction quality", "## Costs per taken signal",
                    "## Fold audit", "## Per regime", "## Performance summary", "## Trade rationale",
                    "## Risk assessment", "## Market narrative", "## Consensus decisions", "## Plots"):
        assert heading in md, heading
    assert "net bps / trade" in md and "Sharpe (ann.)" in md  # the readable number beside the annualised one
    assert "feature version" in md and "out-of-sample window" in md


def test_cost_report_matches_the_costs_table(lake, report):
    costs = lake.read(COSTS)
    stored = json.loads(report.cost_report_path.read_text())
    assert stored == report.cost_report and stored["horizon_bars"] == 12
    assert sorted(stored["engines"]) == list(ENGINES)
    # the trade size the evaluation costed, per quote currency (synthetic SYN000USD: USD), in every output
    assert costs["notional"].unique().to_list() == [10_000.0]
    assert stored["notional_by_quote"] == {"USD": [10_000.0]} == report.metrics["notional_by_quote"]
    assert "currency): 10,000 USD." in report.markdown
    # the cost assumptions the evaluation ran under (its table's cost_config column), in every output too
    assert stored["cost_config"] == CostConfig().as_dict() == report.metrics["cost_config"]
    assert ("Cost assumptions (policy.yaml `costs` when the evaluation ran): taker fee 5 bps per fill, slippage 1 bps "
            "per fill") in report.markdown
    assert all("cost_config" not in row for row in report.metrics["evaluation"].values())
    older = cost_report(costs, list(ENGINES), horizon=12, evaluation=lake.read(EVALUATION).drop("cost_config"))
    assert older["cost_config"] is None and cost_terms(older["cost_config"]).startswith("not recorded")
    for engine in ENGINES:
        taken = costs.filter((pl.col("engine") == engine) & (pl.col("position_taken") != 0))
        mine = stored["engines"][engine]
        assert mine["signals"] == costs.filter(pl.col("engine") == engine).height
        assert mine["trades"] == taken.height
        for column in ("fee_bps", "half_spread_bps", "slippage_bps", "impact_bps", "funding_bps", "total_cost_bps"):
            assert mine[column] == pytest.approx(taken[column].sum(), abs=1e-6)
        assert mine["gross_edge_bps"] == pytest.approx(taken["realised_edge_bps"].sum(), abs=1e-6)
        assert mine["net_edge_bps"] == pytest.approx(taken["realised_net_edge_bps"].sum(), abs=1e-6)
        assert mine["net_edge_bps"] == pytest.approx(mine["gross_edge_bps"] - mine["total_cost_bps"], abs=1e-6)
        if taken.height:
            assert mine["median_capacity_multiple"] == pytest.approx(
                (taken["capacity_notional"] / taken["notional"]).median())
            assert mine["per_trade_net_edge_bps"] == pytest.approx(taken["realised_net_edge_bps"].mean())
            assert f"{mine['per_trade_net_edge_bps']:.2f}" in report.markdown
        else:
            assert mine["per_trade_net_edge_bps"] is None


def test_curves_and_calibration_agree_with_the_evaluation_table(lake, report):
    evaluation = {r["engine"]: r for r in lake.read(EVALUATION).iter_rows(named=True)}
    metrics = report.metrics
    assert metrics["simulation_matches_evaluation"] is True and metrics["baselines_shared"] is True
    for engine in ENGINES:
        for strategy in ("model", "baseline_buy_and_hold", "baseline_momentum_sign"):
            assert metrics["strategies"][engine][strategy]["total_return"] == pytest.approx(
                evaluation[engine][f"{strategy}_total_return"], rel=1e-8, abs=1e-12)
            assert metrics["strategies"][engine][strategy]["trades"] == evaluation[engine][f"{strategy}_n_trades"]
    calibration = metrics["calibration"]
    assert list(calibration) == ["lightgbm_classifier"]  # the regressor has no probabilities
    assert calibration["lightgbm_classifier"]["ece"] == pytest.approx(evaluation["lightgbm_classifier"]["ece"])
    bins = calibration["lightgbm_classifier"]["bins"]
    assert sum(b["n"] for b in bins) == calibration["lightgbm_classifier"]["rows"]
    assert all(b["lower"] <= b["mean_probability"] <= b["upper"] for b in bins)
    assert {"lightgbm_classifier", "lightgbm_regressor"} == set(metrics["feature_importance"])
    assert all(len(v) == 20 for v in metrics["feature_importance"].values())


def test_the_rationale_follows_the_numbers(report):
    section = report.metrics["narrative"]["trade_rationale"]
    assert section["source"] == "template" and section["text"] == report.narrative["trade_rationale"].text
    for engine in ENGINES:
        numbers = section["numbers"]["engines"][engine]
        costs = report.cost_report["engines"][engine]
        assert numbers["trades"] == costs["trades"]
        assert numbers["net_edge_bps"] == costs["per_trade"]["net_edge_bps"]
        assert numbers["dsr"] == report.metrics["evaluation"][engine]["model_dsr"]
        verdict, reason = trade_verdict(numbers)
        assert f"**{engine}: {verdict}**: {reason}." in report.markdown
        if not costs["trades"] or (costs["per_trade"]["net_edge_bps"] or 0) <= 0:
            assert verdict == DO_NOT_TRADE
    assert all(n.source == "template" for n in report.narrative.values())


def test_same_inputs_give_the_same_bytes(lake, report, tmp_path):
    files = [report.markdown_path, report.metrics_path, report.cost_report_path, report.decision_log_path,
             *report.plot_paths.values()]
    before = {p: p.read_bytes() for p in files}
    again = build_training_report(lake, "run-1_a", generated_at=WHEN, narrator=Narrator(environ={}))
    assert {p: p.read_bytes() for p in files} == before
    assert again.plots == report.plots and again.markdown == report.markdown
    other = build_training_report(lake, "run-2", generated_at=WHEN + dt.timedelta(hours=1),
                                  narrator=Narrator(environ={}))
    assert other.plots == report.plots  # only the stamp and the names differ
    assert other.markdown.replace("run-2", "run-1_a").replace(
        (WHEN + dt.timedelta(hours=1)).isoformat(), WHEN.isoformat()) == report.markdown


@pytest.mark.parametrize("bad", ["", "../escape", "a/b", "a b", "run.1", "ü", "x" * 129, None, 7])
def test_a_bad_run_id_is_refused_before_anything_is_written(lake, bad):
    before = sorted(p.name for p in (lake.root / "reports").iterdir())
    with pytest.raises(ValueError, match="run_id"):
        build_training_report(lake, bad, generated_at=WHEN)
    with pytest.raises(ValueError, match="run_id"):
        check_run_id(bad)
    assert sorted(p.name for p in (lake.root / "reports").iterdir()) == before


def test_decision_log_sample_is_the_tail_plus_strong_calls(lake, report):
    decisions = lake.read(DECISION_LOG).drop("date").sort("timestamp", "symbol")
    sample = pl.read_csv(report.decision_log_path, try_parse_dates=True)
    assert sample.columns == decisions.columns
    expected = decision_sample(decisions)
    assert sample.height == expected.height
    assert sample["score"].to_list() == pytest.approx(expected["score"].to_list())
    strong = decisions.filter(pl.col("level") == "strong")
    assert sample.height == pl.concat([decisions.tail(DECISION_TAIL), strong.tail(STRONG_CAP)]).unique(
        ["timestamp", "symbol"]).height
    assert sample.filter(pl.col("level") == "strong").height >= min(STRONG_CAP, strong.height)
    assert sample["timestamp"].is_sorted()


def test_model_folders_can_be_given_and_a_bad_one_is_reported(lake, tmp_path):
    given = build_training_report(lake, "given", generated_at=WHEN, narrator=Narrator(environ={}),
                                  model_dirs={"lightgbm_classifier": tmp_path / "nowhere"})
    assert list(given.metrics["feature_importance"]) == ["lightgbm_regressor"]
    assert any("lightgbm_classifier" in note and "could not be read" in note for note in given.notes)
    assert "## Notes" in given.markdown


def test_missing_tables_and_bad_horizon_are_named(tmp_path, lake):
    with pytest.raises(ValueError, match="evaluation"):
        build_training_report(Lake(tmp_path / "empty"), "r1", generated_at=WHEN)
    with pytest.raises(ValueError, match="horizon"):
        build_training_report(lake, "r1", horizon=0, generated_at=WHEN)


def test_the_asset_attaches_the_report_and_its_plots(lake):
    import dagster as dg

    from assets.reports import training_report
    from resources import LakeResource

    result = dg.materialize([training_report], resources={"lake": LakeResource(root=str(lake.root))},
                            run_config={"ops": {"training_report": {"config": {"horizon": 12}}}})
    assert result.success
    run_id = result.run_id
    events = result.asset_materializations_for_node("training_report")
    metadata = events[0].metadata
    assert metadata["report"].value.startswith(f"# Training run `{run_id}`")
    for name in ("equity_curve", "calibration", "feature_importance"):
        assert metadata[f"plot_{name}"].value.startswith(f"![{name}](data:image/png;base64,")
    assert metadata["path"].value == str(lake.root / "reports" / f"training_run_{run_id}.md")
    assert (lake.root / "reports" / f"training_run_{run_id}" / "metrics.json").is_file()


def test_a_plot_the_run_can_no_longer_make_is_removed(lake, tmp_path):
    first = build_training_report(lake, "stale", generated_at=WHEN, narrator=Narrator(environ={}))
    path = first.plot_paths["feature_importance"]
    assert path.is_file()
    nowhere = {engine: tmp_path / "nowhere" for engine in ENGINES}
    second = build_training_report(lake, "stale", generated_at=WHEN, narrator=Narrator(environ={}), model_dirs=nowhere)
    assert "feature_importance" not in second.plots and not path.exists()
    assert "feature_importance.png" not in second.markdown
    assert "no tree engine's model could be read" in second.markdown
