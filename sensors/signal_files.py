"""What the drift and regime sensors share: read the signal files past the cursor, move bad ones aside."""

from collections.abc import Iterable

import dagster as dg

from clm.automation.signals import SignalScan, load_cursor, reject_signal, scan_signals
from clm.lake import Lake


def scan_and_reject(context: dg.SensorEvaluationContext, store: Lake, kinds: Iterable[str]) -> SignalScan:
    """New valid signal files of ``kinds`` since the sensor's cursor; each rejected file is moved to
    ``signals/rejected/`` with its reason and logged (left in place, and tried again next tick, when the move
    fails: the valid files still count)."""
    scan = scan_signals(store, kinds, load_cursor(context.cursor))
    for key, reason in scan.rejected.items():
        try:
            target = reject_signal(store, key, reason)
        except OSError as exc:
            context.log.error(f"signal {key} rejected ({reason}) but could not be moved aside: {exc}")
            continue
        context.log.warning(f"signal {key} rejected ({reason}); moved to {target}")
    return scan
