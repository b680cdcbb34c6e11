"""Wiring of the recurrence itself: does the loop let the network recur at all?"""

from __future__ import annotations

from typing import Iterator

from ..finding import Finding, Severity
from ..run import Run
from .registry import rule


@rule("no-recurrence", Severity.ERROR, signals=("rnn_inputs",))
def no_recurrence(run: Run, *, min_calls: int = 5) -> Iterator[Finding]:
    """The recurrent module never carries anything from one element to the next.

    What it detects: every sampled call of a recurrent module (at least 5) was a sequence of
    length 1 with no initial state or an all-zero one.

    Why it matters: an RNN called one element at a time with a fresh zero state is a
    feed-forward layer: its recurrent weights get no gradient and nothing is remembered
    (seed 001 trains each bit separately, then asks for the parity of the whole string).

    How to fix: feed the whole sequence in one call (``lstm(x)`` with x of shape [B, T, F]);
    or, stepping manually, pass the returned state back in (``out, state = lstm(x_t, state)``)
    and backpropagate through the loop before the optimizer step.
    """
    r = run["rnn_inputs"]
    if r.empty or "hx_given" not in r:
        return
    for module, rows in r.groupby("module", sort=False):
        if len(rows) < min_calls or not (rows["seq_len"] == 1).all():
            continue
        fresh = (rows["hx_given"] == 0) | (rows.get("hx_zero", 0) == 1)
        if not fresh.all():
            continue
        yield Finding(
            id="no-recurrence",
            severity=Severity.ERROR,
            title=f"'{module}' only ever sees one element at a time with a fresh zero state",
            explanation=(
                f"All {len(rows)} sampled calls of '{module}' had sequence length 1 and "
                f"{'no initial state' if (rows['hx_given'] == 0).all() else 'an all-zero initial state'}: "
                "it never carries information from one element to the next, so it cannot compute anything "
                "that depends on order or history."
            ),
            fix="Call the RNN on the whole sequence (lstm(x), x: [B, T, F]), or carry the returned state into the next call.",
            evidence={"calls": int(len(rows)), "seq_len": 1, "state_passed": bool((rows["hx_given"] == 1).any())},
            where={"module": module},
            first_step=int(rows["step"].min()),
            plots=("inputs",),
        )
