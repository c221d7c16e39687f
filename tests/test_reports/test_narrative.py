"""The narrative: templates follow their documented thresholds; the narrator caches, locks and falls back."""

import threading
import time

import pytest

from clm.reports import narrative
from clm.reports.narrative import (
    DO_NOT_TRADE,
    INSUFFICIENT,
    LLM_MODEL_ENV,
    PAPER_TRADE,
    TRADE,
    Narrator,
    canonical_json,
    market_narrative,
    performance_summary,
    risk_assessment,
    trade_rationale,
    trade_verdict,
)

GOOD = {"trades": 400, "net_edge_bps": 6.5, "gross_edge_bps": 30.0, "cost_bps": 23.5, "dsr": 0.99,
        "beats_baselines": True}


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


# ------------------------------------------------------------------------------------------------
# templates
# ------------------------------------------------------------------------------------------------


def test_a_negative_net_edge_says_do_not_trade_and_why():
    verdict, reason = trade_verdict({**GOOD, "net_edge_bps": -3.25, "gross_edge_bps": 20.25, "cost_bps": 23.5})
    assert verdict == DO_NOT_TRADE
    assert "20.25 bps" in reason and "23.50 bps" in reason and "-3.25 bps" in reason and "does not cover" in reason
    text = trade_rationale({"horizon": 12, "engines": {"lgbm": {**GOOD, "net_edge_bps": -3.25}}})
    assert "**lgbm: DO NOT TRADE**" in text and "held 12 bars" in text
    # a zero net edge is not an edge either
    assert trade_verdict({**GOOD, "net_edge_bps": 0.0})[0] == DO_NOT_TRADE


@pytest.mark.parametrize(
    ("change", "expected", "phrase"),
    [
        ({}, TRADE, "ahead of every baseline"),
        ({"trades": 0}, DO_NOT_TRADE, "no trade was taken"),
        ({"trades": narrative.MIN_TRADES - 1}, INSUFFICIENT, f"fewer than {narrative.MIN_TRADES}"),
        ({"net_edge_bps": None}, INSUFFICIENT, "no realised net edge"),
        ({"dsr": narrative.DSR_CONFIDENT - 0.01}, PAPER_TRADE, "may be luck"),
        ({"dsr": None}, PAPER_TRADE, "may be luck"),
        ({"dsr": float("nan")}, PAPER_TRADE, "may be luck"),
        ({"beats_baselines": False}, PAPER_TRADE, "does not beat the best baseline"),
    ],
)
def test_trade_verdict_thresholds(change, expected, phrase):
    verdict, reason = trade_verdict({**GOOD, **change})
    assert verdict == expected and phrase in reason
    assert trade_verdict({**GOOD, "trades": narrative.MIN_TRADES})[0] == TRADE  # the threshold itself passes


def test_the_consensus_line_reports_calls_and_their_net():
    text = trade_rationale({"horizon": 6, "engines": {}, "consensus": {
        "decisions": 1000, "long": 30, "short": 20, "strong": 10, "hit_rate": 0.55, "gross_edge_bps": 4.0,
        "trading_cost_bps": 9.5}})
    assert "acted on 50 of 1,000 bars (5.0%" in text and "-5.50 bps net" in text and "does not pay" in text


@pytest.mark.parametrize(
    ("bh", "mood"),
    [(0.0099, "sideways"), (-0.0099, "sideways"), (0.01, "rose"), (0.2, "rose"), (-0.01, "fell")],
)
def test_market_direction_threshold(bh, mood):
    text = market_narrative({"days": 30, "symbols": 4, "buy_and_hold_return": bh, "buy_and_hold_max_drawdown": 0.05})
    assert f"the market {'went ' if mood == 'sideways' else ''}{mood}" in text
    assert "30.0 days (4 symbols)" in text


def test_market_volatility_and_stress():
    calm = market_narrative({"annual_volatility": narrative.LOW_VOLATILITY, "regime_shares": {"panic": 0.09}})
    wild = market_narrative({"annual_volatility": narrative.HIGH_VOLATILITY,
                             "regime_shares": {"trend": 0.6, "panic": narrative.STRESS_SHARE}})
    assert "calm" in calm and "stressed" not in calm
    assert "very volatile" in wild and "stressed" in wild
    assert wild.index("trend 60.0%") < wild.index("panic 10.0%")  # largest share first
    assert "momentum" in market_narrative({"momentum_return": -0.2}) and "did not pay" in market_narrative(
        {"momentum_return": -0.2})


def test_risk_bands_capacity_and_calibration():
    text = risk_assessment({"notional_by_quote": {"BTC": [0.5], "USDT": [10_000.0], "other": [10_000.0]}, "engines": {
        "a": {"max_drawdown": narrative.DRAWDOWN_HIGH, "exposure": 0.5, "capacity_multiple": 0.5, "ece": 0.08},
        "b": {"max_drawdown": narrative.DRAWDOWN_ELEVATED, "exposure": 0.5, "capacity_multiple": 5.0, "ece": 0.01,
              "capacity": 50_000, "worst_regime": "panic", "worst_regime_net_bps": -12.0},
        "c": {"max_drawdown": 0.02, "exposure": 0.0},
        "d": {"max_drawdown": 0.02, "exposure": 0.1, "capacity": 0.7},  # a costs table without notionals
    }})
    a, b, c, d = text.splitlines()
    assert "HIGH drawdown risk" in a and "BELOW the simulated size" in a and "poorly calibrated" in a
    assert "0.5x the simulated trade (0.5 BTC, 10,000 USDT, 10,000 on other symbols)" in a
    assert "elevated drawdown risk" in b and "room for the simulated size" in b and "well calibrated" in b
    assert "5.0x the simulated trade" in b and "50,000" not in b  # the multiple, not a mix of currencies
    assert "weakest in the panic regime (-12.00 bps" in b
    assert "never held a position" in c
    assert "capacity about 0.7 notional per trade (quote currency)" in d and "simulated size" not in d


def test_trade_sizes_read_per_quote_currency():
    assert narrative.trade_sizes({"USDT": [10_000.0], "BTC": [0.5], "other": [10_000.0]}) == (
        "0.5 BTC, 10,000 USDT, 10,000 on other symbols")
    assert narrative.trade_sizes({"ETH": [2.0, 5.0]}) == "2 or 5 ETH"
    assert narrative.trade_sizes({}) == "n/a" and narrative.trade_sizes(None) == "n/a"


def test_performance_summary_reads_coin_flips_and_baselines():
    text = performance_summary({"engines": {
        "x": {"directional_accuracy": 0.51, "total_return": 0.02, "baselines": {"buy-and-hold": 0.05, "flat": 0.0},
              "sim_trades": 120, "sim_net_bps_per_trade": 1.5},
        "y": {"directional_accuracy": 0.56, "total_return": -0.01, "baselines": {"flat": 0.0},
              "sim_trades": 50, "sim_net_bps_per_trade": -2.0},
    }})
    assert "x**: no directional skill (51.0% right, a coin flip)" in text
    assert "lagged buy-and-hold (5.00%)" in text and "beat flat (0.00%)" in text
    assert "y**: some directional skill (56.0% right)" in text and "lagged flat" in text
    assert "Best per-trade result: x at 1.50 bps" in text


def test_templates_are_deterministic_and_keys_canonical():
    numbers = {"horizon": 12, "engines": {"b": GOOD, "a": {**GOOD, "net_edge_bps": -1.0}}}
    reordered = {"engines": {"a": {**GOOD, "net_edge_bps": -1.0}, "b": dict(reversed(list(GOOD.items())))},
                 "horizon": 12}
    assert trade_rationale(numbers) == trade_rationale(reordered)
    assert canonical_json(numbers) == canonical_json(reordered)
    assert canonical_json({"x": float("nan")}) == '{"x":null}'


# ------------------------------------------------------------------------------------------------
# narrator: cache, threads
# ------------------------------------------------------------------------------------------------


def test_cache_expires_after_the_ttl():
    clock = FakeClock()
    calls = []
    narrator = Narrator(clock=clock, environ={}, templates={"s": lambda n: calls.append(1) or f"value {n['v']}"})
    first = narrator.narrate("s", {"v": 1})
    assert first.text == "value 1" and first.source == "template" and LLM_MODEL_ENV in first.note
    clock.now += narrator.ttl_seconds - 1
    assert narrator.narrate("s", {"v": 1}) is first and len(calls) == 1
    narrator.narrate("s", {"v": 2})  # another key
    assert len(calls) == 2
    clock.now += 1  # the first entry is now exactly ttl old: stale
    again = narrator.narrate("s", {"v": 1})
    assert again == first and again is not first and len(calls) == 3 == narrator.computations
    assert narrator.ttl_seconds == 300
    with pytest.raises(ValueError, match="unknown narrative section"):
        narrator.narrate("nope", {})
    with pytest.raises(ValueError, match="ttl_seconds"):
        Narrator(ttl_seconds=0)


def test_many_threads_compute_each_key_once():
    counts: dict[str, int] = {}
    guard = threading.Lock()

    def slow(numbers):
        with guard:
            counts[numbers["k"]] = counts.get(numbers["k"], 0) + 1
        time.sleep(0.02)  # long enough for every thread to pile onto the same keys
        return f"text {numbers['k']}"

    narrator = Narrator(environ={}, templates={"s": slow})
    keys = [f"k{i}" for i in range(6)]
    start = threading.Barrier(36)
    results: list[tuple[str, str]] = []

    def worker(i):
        start.wait()
        key = keys[i % len(keys)]
        results.append((key, narrator.narrate("s", {"k": key}).text))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(36)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counts == {k: 1 for k in keys} and narrator.computations == len(keys)
    assert len(results) == 36 and all(text == f"text {key}" for key, text in results)


# ------------------------------------------------------------------------------------------------
# narrator: the optional local model
# ------------------------------------------------------------------------------------------------


def _fake_llama(reply):
    created = []

    class Llama:
        def __init__(self, model_path, **kwargs):
            created.append(model_path)

        def create_completion(self, prompt, **kwargs):
            assert kwargs["temperature"] == 0.0
            return {"choices": [{"text": reply(prompt)}]}

    return type("llama_cpp", (), {"Llama": Llama}), created


def test_without_llama_cpp_the_template_is_kept_and_the_reason_recorded(tmp_path):
    try:
        narrative.import_llama_cpp()
    except ImportError:
        pass
    else:
        pytest.skip("llama_cpp is installed here")
    model = tmp_path / "model.gguf"
    model.write_bytes(b"not really a model")
    narrator = Narrator(environ={LLM_MODEL_ENV: str(model)})
    out = narrator.narrate("trade_rationale", {"horizon": 12, "engines": {"e": GOOD}})
    assert out.source == "template" and "llama_cpp is not installed" in out.note
    assert out.text == trade_rationale({"horizon": 12, "engines": {"e": GOOD}})
    missing = Narrator(environ={LLM_MODEL_ENV: str(tmp_path / "absent.gguf")}).narrate("market_narrative", {})
    assert missing.source == "template" and "names no file" in missing.note


def test_a_local_model_rephrases_when_it_keeps_every_number(tmp_path, monkeypatch):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"gguf")
    fake, created = _fake_llama(
        lambda prompt: "In short: " + prompt.split("\n\n", 1)[1].rsplit("\n\nRewritten section:", 1)[0])
    monkeypatch.setattr(narrative, "import_llama_cpp", lambda: fake)
    narrator = Narrator(environ={LLM_MODEL_ENV: str(model)})
    numbers = {"horizon": 12, "engines": {"e": {**GOOD, "net_edge_bps": -3.25}}}
    out = narrator.narrate("trade_rationale", numbers)
    assert out.source == "llm" and out.text.startswith("In short:") and "-3.25 bps" in out.text
    assert "model.gguf" in out.note
    narrator.narrate("market_narrative", {"buy_and_hold_return": 0.1})
    assert created == [str(model)]  # loaded once, reused


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (lambda prompt: "The engine lost money.", "changed or dropped numbers"),
        (lambda prompt: "   ", "returned no text"),
        (lambda prompt: 1 / 0, "ZeroDivisionError"),
    ],
)
def test_a_failing_local_model_falls_back_to_the_template(tmp_path, monkeypatch, reply, reason):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"gguf")
    fake, _ = _fake_llama(reply)
    monkeypatch.setattr(narrative, "import_llama_cpp", lambda: fake)
    numbers = {"horizon": 12, "engines": {"e": GOOD}}
    out = Narrator(environ={LLM_MODEL_ENV: str(model)}).narrate("trade_rationale", numbers)
    assert out.source == "template" and reason in out.note and out.text == trade_rationale(numbers)
