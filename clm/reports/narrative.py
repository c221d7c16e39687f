"""A deterministic narrative of a training run, written from its numbers by templates.

Four sections, each a pure function of a dict of numbers (no free text from the data except engine,
baseline and regime names), so the same numbers always read the same and a reader can trace every
sentence to a metric:

* ``market_narrative``: what the market did over the out-of-sample window (buy-and-hold and
  momentum baselines, volatility, regime mix);
* ``trade_rationale``: per engine, a verdict (``TRADE``, ``PAPER-TRADE ONLY``, ``INSUFFICIENT
  EVIDENCE``, ``DO NOT TRADE``) from its realised per-trade edge net of costs, trade count, deflated
  Sharpe and the baselines, plus what the consensus did;
* ``risk_assessment``: drawdown, exposure, turnover, capacity, calibration and the worst regime;
* ``performance_summary``: prediction skill and the strategy against the baselines.

Thresholds (module constants, in the units stated):

* ``FLAT_MARKET_RETURN = 0.01``: a buy-and-hold return within +-1 % over the window reads "sideways";
* ``HIGH_VOLATILITY = 0.80`` / ``LOW_VOLATILITY = 0.30``: annualised volatility of one-bar returns
  above / below reads "very volatile" / "calm" (crypto scale);
* ``STRESS_SHARE = 0.10``: a panic-regime share of bars at or above 10 % reads "stressed";
* ``MIN_TRADES = 30``: fewer realised trades than this are not evidence either way;
* ``DSR_CONFIDENT = 0.95``: a deflated Sharpe ratio below this may be luck (Bailey & Lopez de Prado);
* ``COIN_FLIP_MARGIN = 0.02``: directional accuracy within 50 % +- 2 points is a coin flip;
* ``DRAWDOWN_HIGH = 0.20`` / ``DRAWDOWN_ELEVATED = 0.10``: max drawdown (fraction) bands;
* ``ECE_POOR = 0.05``: expected calibration error above 5 points: probabilities are not to be read
  as probabilities.

``Narrator`` caches each section's text for 5 minutes (``ttl_seconds``; injectable clock), keyed
by the section and the canonical JSON of its numbers; it is thread-safe and computes a key once
even when many threads ask at the same time. When ``llama_cpp`` is importable and
``CLM_LLM_MODEL_PATH`` names an existing model file, it asks that local model to rephrase the
template text; the rephrasing is kept only if every number of the template survives it, and any
failure keeps the template text and records why.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLAT_MARKET_RETURN = 0.01
HIGH_VOLATILITY = 0.80
LOW_VOLATILITY = 0.30
STRESS_SHARE = 0.10
MIN_TRADES = 30
DSR_CONFIDENT = 0.95
COIN_FLIP_MARGIN = 0.02
DRAWDOWN_HIGH = 0.20
DRAWDOWN_ELEVATED = 0.10
ECE_POOR = 0.05

TRADE = "TRADE"
PAPER_TRADE = "PAPER-TRADE ONLY"
INSUFFICIENT = "INSUFFICIENT EVIDENCE"
DO_NOT_TRADE = "DO NOT TRADE"

LLM_MODEL_ENV = "CLM_LLM_MODEL_PATH"
DEFAULT_TTL_SECONDS = 300.0
BASELINE_LABELS = {
    "baseline_flat": "flat",
    "baseline_buy_and_hold": "buy-and-hold",
    "baseline_momentum_sign": "momentum",
}


# ------------------------------------------------------------------------------------------------
# number formatting: one place, so the LLM check can find every number again
# ------------------------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def pct(value: Any, digits: int = 2) -> str:
    v = _finite(value)
    return "n/a" if v is None else f"{v * 100:.{digits}f}%"


def bps(value: Any) -> str:
    v = _finite(value)
    return "n/a" if v is None else f"{v:.2f} bps"


def num(value: Any, digits: int = 2) -> str:
    v = _finite(value)
    return "n/a" if v is None else f"{v:.{digits}f}"


def count(value: Any) -> str:
    v = _finite(value)
    return "n/a" if v is None else f"{int(v):,}"


def money(value: Any) -> str:
    """An amount of a currency: whole units from 100 up (``10,000``), else 3 significant digits (``0.5``
    BTC must not read ``0``)."""
    v = _finite(value)
    if v is None:
        return "n/a"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def trade_sizes(notional_by_quote: Any) -> str:
    """``{"BTC": [0.5], "USDT": [10000.0]}`` (``clm.evaluation.costs.notionals_used``) as ``0.5 BTC,
    10,000 USDT``; ``other`` (symbols without a readable quote) reads ``10,000 on other symbols``; n/a when
    empty."""
    if not isinstance(notional_by_quote, Mapping) or not notional_by_quote:
        return "n/a"
    parts = []
    for quote, values in sorted(notional_by_quote.items(), key=lambda kv: (kv[0] == "other", kv[0])):
        values = values if isinstance(values, list | tuple) else [values]
        amount = " or ".join(money(v) for v in values)
        parts.append(f"{amount} on other symbols" if quote == "other" else f"{amount} {quote}")
    return ", ".join(parts)


def cost_terms(cost_config: Any) -> str:
    """The cost assumptions (``CostConfig.as_dict``; ``{"by_engine": {engine: as_dict}}`` when the engines
    differ) in a line: fee, slippage, impact, participation, minimum net edge, spread, funding."""
    if not isinstance(cost_config, Mapping) or not cost_config:
        return "not recorded (an evaluation table written before it recorded them)"
    if "by_engine" in cost_config:
        return "; ".join(f"{engine}: {cost_terms(c)}" for engine, c in sorted(cost_config["by_engine"].items()))
    c = cost_config

    def _short(value: Any) -> str:
        v = _finite(value)
        return "n/a" if v is None else f"{v:g}"

    taker = bool(c.get("use_taker"))
    fee = (f"taker fee {_short(c.get('taker_fee_bps'))} bps per fill" if taker
           else f"maker fee {_short(c.get('maker_fee_bps'))} bps per fill")
    half = _finite(c.get("default_half_spread_bps"))
    spread = (f"half spread {_short(half)} bps where none is quoted" if half is not None
              else f"half spread estimated (Corwin-Schultz, {count(c.get('spread_estimate_window'))} bars) where "
                   "none is quoted")
    return ", ".join([
        fee, f"slippage {_short(c.get('slippage_bps'))} bps per fill",
        f"impact coefficient {_short(c.get('impact_coefficient'))} bps per unit of sqrt(participation)",
        f"at most {pct(c.get('max_participation'), 1)} of a bar's quote volume",
        f"a trade needs an expected edge of {_short(c.get('min_edge_after_cost_bps'))} bps net of costs",
        spread, "funding charged" if c.get("funding") else "funding not charged",
    ])


# ------------------------------------------------------------------------------------------------
# the four sections
# ------------------------------------------------------------------------------------------------


def market_narrative(numbers: Mapping[str, Any]) -> str:
    """What the market did over the out-of-sample window.

    ``numbers``: ``days``, ``symbols``, ``buy_and_hold_return``, ``buy_and_hold_max_drawdown``,
    ``momentum_return``, ``annual_volatility`` (fractions), ``regime_shares`` (regime -> share of bars).
    """
    days, symbols = _finite(numbers.get("days")), numbers.get("symbols")
    bh = _finite(numbers.get("buy_and_hold_return"))
    lines = []
    window = f"{num(days, 1)} days" if days is not None else "the out-of-sample window"
    if bh is None:
        lines.append(f"Over {window} ({count(symbols)} symbols) the buy-and-hold baseline could not be measured.")
    else:
        if abs(bh) < FLAT_MARKET_RETURN:
            mood = "the market went sideways"
        elif bh > 0:
            mood = "the market rose"
        else:
            mood = "the market fell"
        lines.append(
            f"Over {window} ({count(symbols)} symbols) {mood}: an equal-weight buy-and-hold returned {pct(bh)} "
            f"net of costs, with a maximum drawdown of {pct(numbers.get('buy_and_hold_max_drawdown'))}."
        )
    vol = _finite(numbers.get("annual_volatility"))
    if vol is not None:
        if vol >= HIGH_VOLATILITY:
            feel = "very volatile"
        elif vol <= LOW_VOLATILITY:
            feel = "calm"
        else:
            feel = "moderately volatile"
        lines.append(f"Bar returns were {feel}: {pct(vol, 1)} annualised volatility.")
    mom = _finite(numbers.get("momentum_return"))
    if mom is not None:
        verdict = "paid" if mom > 0 else "did not pay"
        lines.append(f"Following the last bar's direction (momentum baseline) {verdict}: {pct(mom)} net of costs.")
    shares = {str(k): _finite(v) for k, v in (numbers.get("regime_shares") or {}).items()}
    shares = {k: v for k, v in shares.items() if v is not None}
    if shares:
        ordered = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))
        mix = ", ".join(f"{name} {pct(share, 1)}" for name, share in ordered)
        lines.append(f"Regime mix of the bars: {mix}.")
        panic = shares.get("panic", 0.0)
        if panic >= STRESS_SHARE:
            lines.append(f"The window was stressed: {pct(panic, 1)} of bars were in panic (>= {pct(STRESS_SHARE, 0)}).")
    return " ".join(lines)


def trade_verdict(engine: Mapping[str, Any]) -> tuple[str, str]:
    """(verdict, reason) for one engine from ``trades``, ``net_edge_bps``, ``gross_edge_bps``,
    ``cost_bps`` (per trade), ``dsr`` and ``beats_baselines``; rules in the module docstring."""
    trades = int(_finite(engine.get("trades")) or 0)
    net, gross, cost = (_finite(engine.get(k)) for k in ("net_edge_bps", "gross_edge_bps", "cost_bps"))
    if trades == 0:
        return DO_NOT_TRADE, "no signal's expected edge cleared its costs, so no trade was taken"
    if net is None:
        return INSUFFICIENT, f"{count(trades)} trades but no realised net edge to measure"
    if net <= 0:
        return DO_NOT_TRADE, (
            f"the realised edge of {bps(gross)} per trade does not cover {bps(cost)} of costs: "
            f"{bps(net)} per trade net over {count(trades)} trades"
        )
    if trades < MIN_TRADES:
        return INSUFFICIENT, (
            f"{bps(net)} per trade net of costs, but only {count(trades)} trades (fewer than {MIN_TRADES})"
        )
    dsr = _finite(engine.get("dsr"))
    if dsr is None or dsr < DSR_CONFIDENT:
        return PAPER_TRADE, (
            f"{bps(net)} per trade net of costs over {count(trades)} trades, but the deflated Sharpe ratio "
            f"is {num(dsr)} (< {num(DSR_CONFIDENT)}): the edge may be luck"
        )
    if not engine.get("beats_baselines"):
        return PAPER_TRADE, (
            f"{bps(net)} per trade net of costs over {count(trades)} trades, but the strategy does not beat "
            "the best baseline on the same rows"
        )
    return TRADE, (
        f"{bps(net)} per trade net of costs over {count(trades)} trades, deflated Sharpe {num(dsr)}, "
        "ahead of every baseline"
    )


def trade_rationale(numbers: Mapping[str, Any]) -> str:
    """A verdict per engine, then what the consensus did.

    ``numbers``: ``horizon`` (bars held), ``engines`` (name -> ``trade_verdict`` inputs),
    ``consensus`` (optional: ``decisions``, ``long``, ``short``, ``strong``, ``hit_rate``,
    ``gross_edge_bps``, ``trading_cost_bps``).
    """
    horizon = numbers.get("horizon")
    lines = [
        f"A trade is one taken signal, entered a bar after the decision and held {count(horizon)} bars, "
        "charged a full round trip of fees, spread, slippage, impact and funding.",
        "",
    ]
    for name, engine in sorted((numbers.get("engines") or {}).items()):
        verdict, reason = trade_verdict(engine)
        lines.append(f"- **{name}: {verdict}**: {reason}.")
    cons = numbers.get("consensus")
    if cons:
        decisions = int(_finite(cons.get("decisions")) or 0)
        acted = int(_finite(cons.get("long")) or 0) + int(_finite(cons.get("short")) or 0)
        share = acted / decisions if decisions else None
        text = (
            f"- **consensus**: acted on {count(acted)} of {count(decisions)} bars ({pct(share, 1)}; "
            f"{count(cons.get('long'))} long, {count(cons.get('short'))} short, {count(cons.get('strong'))} "
            "at strong level)"
        )
        hit = _finite(cons.get("hit_rate"))
        if acted and hit is not None:
            gross, cost = _finite(cons.get("gross_edge_bps")), _finite(cons.get("trading_cost_bps"))
            net = gross - cost if gross is not None and cost is not None else None
            text += (
                f"; its calls were right {pct(hit, 1)} of the time, {bps(gross)} gross per call against "
                f"{bps(cost)} of trading costs (funding excluded): {bps(net)} net"
            )
            if net is not None and net <= 0:
                text += ", so the vote does not pay for itself"
        lines.append(text + ".")
    return "\n".join(lines)


def risk_assessment(numbers: Mapping[str, Any]) -> str:
    """Per engine: drawdown band, exposure and turnover, capacity, calibration, worst regime.

    ``numbers``: ``notional_by_quote`` (the simulated trade size per quote currency, ``trade_sizes``),
    ``engines`` (name -> ``max_drawdown``, ``exposure``, ``turnover``, ``capacity`` (quote currency,
    read only when ``capacity_multiple`` is missing), ``capacity_multiple`` (median over trades of the
    bar's capacity over the trade's notional: currency-free), ``hit_rate``, ``profit_factor``, ``ece``
    (classifiers), ``worst_regime`` and ``worst_regime_net_bps`` (optional)).
    """
    lines = []
    sizes = trade_sizes(numbers.get("notional_by_quote"))
    for name, e in sorted((numbers.get("engines") or {}).items()):
        dd = _finite(e.get("max_drawdown"))
        if _finite(e.get("exposure")) == 0:
            lines.append(f"- **{name}**: never held a position, so it took no market risk.")
            continue
        if dd is None:
            band = "unmeasured drawdown"
        elif dd >= DRAWDOWN_HIGH:
            band = f"HIGH drawdown risk ({pct(dd)} max drawdown, >= {pct(DRAWDOWN_HIGH, 0)})"
        elif dd >= DRAWDOWN_ELEVATED:
            band = f"elevated drawdown risk ({pct(dd)} max drawdown)"
        else:
            band = f"contained drawdown ({pct(dd)} max drawdown)"
        parts = [
            band,
            f"in the market {pct(e.get('exposure'), 1)} of the time, turnover {num(e.get('turnover'), 3)} per bar",
            f"hit rate {pct(e.get('hit_rate'), 1)}, profit factor {num(e.get('profit_factor'))}",
        ]
        multiple, capacity = _finite(e.get("capacity_multiple")), _finite(e.get("capacity"))
        if multiple is not None:
            room = "room for the simulated size" if multiple >= 1 else "BELOW the simulated size"
            parts.append(f"capacity at the participation limit about {num(multiple, 1)}x the simulated trade "
                         f"({sizes}): {room}")
        elif capacity is not None:
            parts.append(f"capacity about {money(capacity)} notional per trade (quote currency) at the "
                         "participation limit")
        ece = _finite(e.get("ece"))
        if ece is not None:
            quality = "poorly calibrated, do not read them as odds" if ece > ECE_POOR else "well calibrated"
            parts.append(f"probabilities {quality} (ECE {pct(ece, 1)})")
        worst = e.get("worst_regime")
        worst_net = _finite(e.get("worst_regime_net_bps"))
        if worst and worst_net is not None:
            parts.append(f"weakest in the {worst} regime ({bps(worst_net)} per trade net)")
        lines.append(f"- **{name}**: " + "; ".join(parts) + ".")
    if not lines:
        return "No engine was evaluated: no risk to assess."
    return "\n".join(lines)


def performance_summary(numbers: Mapping[str, Any]) -> str:
    """Skill and results against the baselines on the same rows.

    ``numbers``: ``engines`` (name -> ``directional_accuracy``, ``ic``, ``total_return``, ``sharpe``,
    ``dsr``, ``sim_trades``, ``sim_net_bps_per_trade``, ``baselines`` (label -> total return)).
    """
    engines = numbers.get("engines") or {}
    lines = []
    for name, e in sorted(engines.items()):
        da = _finite(e.get("directional_accuracy"))
        if da is None:
            skill = "directional accuracy unmeasured"
        elif abs(da - 0.5) <= COIN_FLIP_MARGIN:
            skill = f"no directional skill ({pct(da, 1)} right, a coin flip)"
        elif da > 0.5:
            skill = f"some directional skill ({pct(da, 1)} right)"
        else:
            skill = f"worse than a coin flip ({pct(da, 1)} right)"
        total = _finite(e.get("total_return"))
        baselines = {str(k): _finite(v) for k, v in (e.get("baselines") or {}).items()}
        versus = []
        for label, value in sorted(baselines.items()):
            if value is None or total is None:
                continue
            if abs(total - value) < 1e-12:
                word = "matched"
            else:
                word = "beat" if total > value else "lagged"
            versus.append(f"{word} {label} ({pct(value)})")
        text = (
            f"- **{name}**: {skill}, IC {num(e.get('ic'), 3)}; the strategy returned {pct(total)} net of costs"
            + (f" and {', '.join(versus)}" if versus else "")
            + f"; {count(e.get('sim_trades'))} simulated trades averaging {bps(e.get('sim_net_bps_per_trade'))} net"
            + f" (annualised Sharpe {num(e.get('sharpe'))}, deflated Sharpe ratio {num(e.get('dsr'))})."
        )
        lines.append(text)
    ranked = [(n, _finite(e.get("sim_net_bps_per_trade"))) for n, e in engines.items()]
    ranked = [(n, v) for n, v in ranked if v is not None]
    if ranked:
        best, value = sorted(ranked, key=lambda kv: (-kv[1], kv[0]))[0]
        lines.append("")
        lines.append(f"Best per-trade result: {best} at {bps(value)} per simulated trade net of costs.")
    if not lines:
        return "No engine was evaluated."
    return "\n".join(lines)


SECTIONS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "market_narrative": market_narrative,
    "trade_rationale": trade_rationale,
    "risk_assessment": risk_assessment,
    "performance_summary": performance_summary,
}
SECTION_TITLES = {
    "market_narrative": "Market narrative",
    "trade_rationale": "Trade rationale",
    "risk_assessment": "Risk assessment",
    "performance_summary": "Performance summary",
}


# ------------------------------------------------------------------------------------------------
# the narrator: cache, lock, optional local model
# ------------------------------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, non-finite floats as null: equal numbers give one cache key."""
    return json.dumps(_json_clean(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def _json_clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_clean(v) for v in value]
    return value


@dataclass(frozen=True)
class Narrative:
    """One section's text; ``source`` is ``template`` or ``llm``; ``note`` says why the template
    text was kept (or which model rephrased it)."""

    section: str
    text: str
    source: str
    note: str | None = None

    def to_dict(self) -> dict:
        return {"section": self.section, "text": self.text, "source": self.source, "note": self.note}


def import_llama_cpp() -> Any:
    """The optional ``llama_cpp`` module; imported here, never at module top (tests replace this)."""
    import llama_cpp

    return llama_cpp


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?%?")
PROMPT = (
    "Rewrite the following section of a trading-model report in clear, plain English for a trader. "
    "Keep every number exactly as written, add no facts, no advice beyond what it says, and no preamble.\n\n"
    "{text}\n\nRewritten section:\n"
)


class Narrator:
    """Section texts, cached ``ttl_seconds`` per (section, canonical numbers), thread-safe."""

    def __init__(
        self,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        templates: Mapping[str, Callable[[Mapping[str, Any]], str]] | None = None,
        importer: Callable[[], Any] | None = None,
        environ: Mapping[str, str] | None = None,
        max_tokens: int = 768,
    ):
        if not isinstance(ttl_seconds, int | float) or not ttl_seconds > 0:
            raise ValueError(f"ttl_seconds must be a number > 0, got {ttl_seconds!r}")
        self.ttl_seconds = float(ttl_seconds)
        self._clock = clock
        self._templates = dict(templates if templates is not None else SECTIONS)
        self._importer = importer
        self._environ = environ
        self._max_tokens = max_tokens
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._waiters: dict[tuple[str, str], int] = {}  # threads holding or waiting for a key's lock
        self._cache: dict[tuple[str, str], tuple[float, Narrative]] = {}
        self._llm: tuple[str, Any] | None = None  # (model path, loaded model)
        self._llm_lock = threading.Lock()  # a llama.cpp model is not safe to call from two threads
        self.computations = 0  # how many texts were composed (cache misses)

    # ---------------------------------------------------------------- public
    def narrate(self, section: str, numbers: Mapping[str, Any]) -> Narrative:
        """The section's text for these numbers: from the cache while fresh, else composed once."""
        if section not in self._templates:
            raise ValueError(f"unknown narrative section {section!r}; known: {sorted(self._templates)}")
        key = (section, canonical_json({"numbers": numbers, "model": self._model_path_setting()}))
        with self._lock:
            hit = self._fresh(key)
            if hit is not None:
                return hit
            key_lock = self._key_locks.setdefault(key, threading.Lock())
            self._waiters[key] = self._waiters.get(key, 0) + 1
        try:
            with key_lock:  # one composer per key; the others wait here, then read the cache
                with self._lock:
                    hit = self._fresh(key)
                    if hit is not None:
                        return hit
                narrative = self._compose(section, numbers)
                with self._lock:
                    self.computations += 1
                    self._cache[key] = (self._clock(), narrative)
                    self._prune()
                return narrative
        finally:
            with self._lock:  # the last thread through drops the key's lock
                left = self._waiters[key] - 1
                if left:
                    self._waiters[key] = left
                else:
                    del self._waiters[key]
                    self._key_locks.pop(key, None)

    def narrate_all(self, numbers_by_section: Mapping[str, Mapping[str, Any]]) -> dict[str, Narrative]:
        return {section: self.narrate(section, numbers) for section, numbers in numbers_by_section.items()}

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    # ---------------------------------------------------------------- cache
    def _fresh(self, key: tuple[str, str]) -> Narrative | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        created, narrative = entry
        if self._clock() - created < self.ttl_seconds:
            return narrative
        del self._cache[key]
        return None

    def _prune(self) -> None:
        """Drop expired entries (called under ``_lock``), so the cache holds at most 5 minutes of texts."""
        now = self._clock()
        for key in [k for k, (t, _) in self._cache.items() if now - t >= self.ttl_seconds]:
            del self._cache[key]

    # ---------------------------------------------------------------- composing
    def _model_path_setting(self) -> str | None:
        env = os.environ if self._environ is None else self._environ
        return env.get(LLM_MODEL_ENV) or None

    def _compose(self, section: str, numbers: Mapping[str, Any]) -> Narrative:
        text = self._templates[section](numbers)
        model_path = self._model_path_setting()
        if model_path is None:
            return Narrative(section, text, "template", f"{LLM_MODEL_ENV} is not set")
        if not Path(model_path).is_file():
            return Narrative(section, text, "template", f"{LLM_MODEL_ENV} names no file: {model_path}")
        importer = self._importer or _default_importer()
        try:
            llama_cpp = importer()
        except ImportError as exc:
            why = f"llama_cpp is not installed ({exc}); pip install llama-cpp-python"
            return Narrative(section, text, "template", why)
        try:
            rephrased = self._rephrase(llama_cpp, text, model_path)
        except Exception as exc:  # noqa: BLE001 - any failure of the optional model keeps the template
            return Narrative(section, text, "template", f"local model failed: {type(exc).__name__}: {exc}"[:300])
        if not rephrased.strip():
            return Narrative(section, text, "template", "local model returned no text")
        missing = sorted(set(_NUMBER.findall(text)) - set(_NUMBER.findall(rephrased)))
        if missing:
            return Narrative(section, text, "template", f"local model changed or dropped numbers {missing[:5]}")
        return Narrative(section, rephrased.strip(), "llm", f"rephrased by {Path(model_path).name}")

    def _rephrase(self, llama_cpp: Any, text: str, model_path: str) -> str:
        with self._llm_lock:
            if self._llm is None or self._llm[0] != model_path:
                model = llama_cpp.Llama(model_path=model_path, n_ctx=4096, seed=0, verbose=False)
                self._llm = (model_path, model)
            model = self._llm[1]
            out = model.create_completion(PROMPT.format(text=text), max_tokens=self._max_tokens, temperature=0.0)
        return str(out["choices"][0]["text"])


def _default_importer() -> Callable[[], Any]:
    """Looked up at call time, so tests can replace ``import_llama_cpp`` with monkeypatch."""
    return import_llama_cpp


DEFAULT_NARRATOR = Narrator()


__all__ = [
    "DO_NOT_TRADE",
    "INSUFFICIENT",
    "LLM_MODEL_ENV",
    "PAPER_TRADE",
    "SECTIONS",
    "SECTION_TITLES",
    "TRADE",
    "Narrative",
    "Narrator",
    "canonical_json",
    "import_llama_cpp",
    "market_narrative",
    "performance_summary",
    "risk_assessment",
    "trade_rationale",
    "trade_sizes",
    "trade_verdict",
]
