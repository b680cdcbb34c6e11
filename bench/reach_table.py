"""Per finding id: on which model styles and data pipelines it was shown to fire, and to stay quiet.

    rnndoctor check checks $(ls -d checks/*/) --jobs 2 --out /tmp/chk    # keeps each entry's run
    python bench/reach_table.py /tmp/chk checks $(ls -d checks/*/)      # Markdown table

An entry counts for an id as **fired** when its check file expects the id and the current
rules find it on the kept run, and as **quiet** when it forbids the id and the rules do not
report it (at the forbidden severity). The styles are read from each run's own record, not
from its file name: the recurrent module kinds (fused nn.LSTM/GRU/RNN, a *Cell loop, a
hand-written cell read by dataflow, a loop inside a forward), whether the recurrent input
was packed, and the Dataset classes the loaders drew from (or none: tensors sliced by hand,
generators). Not a test: the table goes into the issue notes.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnndoctor.checks import collect, evaluate  # noqa: E402
from rnndoctor.diagnose import diagnose  # noqa: E402
from rnndoctor.run import Run, load_run  # noqa: E402

FUSED = {"LSTM": "nn.LSTM", "GRU": "nn.GRU", "RNN": "nn.RNN"}
CELLS = {"LSTMCell": "LSTMCell loop", "GRUCell": "GRUCell loop", "RNNCell": "RNNCell loop"}


def model_styles(run: Run) -> set[str]:
    """How the recurrence is written, from the adopted model and the hand-cell reading."""
    styles = set()
    for r in (run.meta.get("model") or {}).get("recurrent", []) or []:
        kind = str(r.get("type", ""))
        styles.add(FUSED.get(kind) or CELLS.get(kind) or kind)
    if run.has("hand_cells"):
        cells = run["hand_cells"]
        read = pd.to_numeric(cells.get("read"), errors="coerce")
        inline = cells.get("reason", pd.Series(dtype=str)).astype(str).str.contains("inside its forward")
        if (read == 1).any():
            styles.add("hand-written cell")
        if inline.any() or ((read == 0) & ~inline).any():
            styles.add("loop inside a forward" if inline.any() else "unread hand cell (Elman)")
    return styles or {"no recurrent module seen"}


def pipeline_styles(run: Run) -> set[str]:
    """How the data arrived: Dataset classes (iterable ones marked), packed input, or none."""
    styles = set()
    if run.has("datasets"):
        for _, d in run["datasets"].drop_duplicates("dataset").iterrows():
            styles.add(f"{d['dataset']}{'' if d.get('map_style', 1) else ' (iterable)'}")
    else:
        styles.add("no Dataset (tensors, generators)")
    if run.has("rnn_inputs") and (pd.to_numeric(run["rnn_inputs"].get("packed"), errors="coerce") == 1).any():
        styles.add("PackedSequence")
    return styles


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    out, paths = Path(args[0]), args[1:] or ["checks"]
    fired: dict[str, list[tuple[str, set[str], set[str]]]] = defaultdict(list)
    quiet: dict[str, list[tuple[str, set[str], set[str]]]] = defaultdict(list)
    for entry in collect(paths):
        run_dir = out / entry.name
        if not (run_dir / "meta.json").exists():
            continue
        run = load_run(run_dir)
        findings = diagnose(run).findings
        result = evaluate(entry, findings)
        found = {f.id for f in findings}
        styles = (entry.name, model_styles(run), pipeline_styles(run))
        for e in entry.expect:
            if e.id in found and not any(r.startswith(f"expected {e.id}") for r in result.reasons):
                fired[e.id].append(styles)
        for e in entry.forbid:
            if not any(r.startswith(f"forbidden {e.id}") for r in result.reasons):
                quiet[e.id].append(styles)
    print("| id | fired on | model styles it fired on | pipelines it fired on | quiet on | model styles quiet on |")
    print("|---|---|---|---|---|---|")
    for rule_id in sorted(set(fired) | set(quiet)):
        f, q = fired.get(rule_id, []), quiet.get(rule_id, [])
        fm = sorted(set().union(*(m for _, m, _ in f))) if f else []
        fp = sorted(set().union(*(p for _, _, p in f))) if f else []
        qm = sorted(set().union(*(m for _, m, _ in q))) if q else []
        print(f"| `{rule_id}` | {len(f)} | {', '.join(fm)} | {', '.join(fp)} | {len(q)} | {', '.join(qm)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
