"""The `rnndoctor` command as a user runs it: a subprocess, exit codes, one-line errors."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TRAIN = """
import sys, torch, torch.nn as nn, torch.nn.functional as F
torch.manual_seed(0)
class M(nn.Module):
    def __init__(self):
        super().__init__(); self.rnn = nn.GRU(1, 8, batch_first=True); self.out = nn.Linear(8, 2)
    def forward(self, x):
        return self.out(self.rnn(x)[0][:, -1])
model = M(); opt = torch.optim.SGD(model.parameters(), lr=0.1)
def step(i):
    x = torch.randint(0, 2, (16, 5, 1)).float(); y = (x.sum((1, 2)) % 2).long()
    loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
"""


def script(tmp_path, body, name="train.py"):
    path = tmp_path / name
    path.write_text(TRAIN + textwrap.dedent(body))
    return path


def rnndoctor(*args, cwd):
    return subprocess.run([sys.executable, "-m", "rnndoctor", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def findings_json(path):
    return json.loads(Path(path).read_text())


def test_max_steps_stops_an_endless_loop_and_passes_script_args(tmp_path):
    path = script(tmp_path, """
        assert sys.argv[1:] == ["--lr", "0.1"], sys.argv
        i = 0
        while True:
            step(i); i += 1
    """)
    p = rnndoctor("diagnose", path, "--max-steps", 7, "--json", tmp_path / "f.json", "--out", tmp_path / "run", "--", "--lr", "0.1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    data = findings_json(tmp_path / "f.json")
    assert data["run"]["status"] == "max-steps" and data["run"]["steps"] == 7


def test_max_steps_is_not_swallowed_by_the_scripts_except_exception(tmp_path):
    path = script(tmp_path, """
        for i in range(1000):
            try:
                step(i)
            except Exception:
                pass
    """)
    p = rnndoctor("diagnose", path, "--max-steps", 5, "--out", tmp_path / "run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert findings_json(tmp_path / "run" / "findings.json")["run"]["steps"] == 5


def test_script_that_raises_at_step_5_keeps_record_and_shows_its_own_traceback(tmp_path):
    path = script(tmp_path, """
        for i in range(100):
            if i == 5:
                raise RuntimeError("dataset shard missing")
            step(i)
    """)
    p = rnndoctor("diagnose", path, "--out", tmp_path / "run", cwd=tmp_path)
    assert p.returncode == 0
    assert 'train.py", line' in p.stderr and "RuntimeError: dataset shard missing" in p.stderr
    assert "rnndoctor/watch.py" not in p.stderr and "runpy" not in p.stderr
    data = findings_json(tmp_path / "run" / "findings.json")
    assert data["run"]["status"] == "crashed" and data["run"]["steps"] == 5
    assert (tmp_path / "run" / "signals" / "steps.jsonl").is_file()


def test_sys_exit_zero_early_is_a_completed_run(tmp_path):
    path = script(tmp_path, """
        for i in range(3):
            step(i)
        sys.exit(0)
    """)
    p = rnndoctor("diagnose", path, "--out", tmp_path / "run", cwd=tmp_path)
    assert p.returncode == 0
    data = findings_json(tmp_path / "run" / "findings.json")
    assert data["run"]["status"] == "completed" and data["run"]["steps"] == 3


def test_model_without_recurrent_module_says_so(tmp_path):
    path = tmp_path / "mlp.py"
    path.write_text(textwrap.dedent("""
        import torch, torch.nn as nn, torch.nn.functional as F
        m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)); opt = torch.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(3):
            loss = F.cross_entropy(m(torch.randn(8, 4)), torch.randint(0, 2, (8,)))
            opt.zero_grad(); loss.backward(); opt.step()
    """))
    p = rnndoctor("diagnose", path, "--out", tmp_path / "run", cwd=tmp_path)
    assert p.returncode == 0
    assert "no nn.RNN/LSTM/GRU or *Cell module or gated hand-written cell found" in p.stderr


def test_a_hand_written_cell_is_named_as_read(tmp_path):
    path = tmp_path / "cell.py"
    path.write_text(textwrap.dedent("""
        import torch, torch.nn as nn, torch.nn.functional as F
        class Cell(nn.Module):
            def __init__(self):
                super().__init__(); self.lin = nn.Linear(3 + 8, 32)
            def forward(self, x, h, c):
                i, f, g, o = self.lin(torch.cat([x, h], 1)).chunk(4, 1)
                c = f.sigmoid() * c + i.sigmoid() * g.tanh()
                return o.sigmoid() * c.tanh(), c
        cell, out = Cell(), nn.Linear(8, 2)
        opt = torch.optim.SGD([*cell.parameters(), *out.parameters()], lr=0.1)
        for _ in range(4):
            x = torch.randn(4, 10, 3); h = c = torch.zeros(4, 8)
            for t in range(10):
                h, c = cell(x[:, t], h, c)
            loss = F.cross_entropy(out(h), torch.randint(0, 2, (4,)))
            opt.zero_grad(); loss.backward(); opt.step()
    """))
    p = rnndoctor("diagnose", path, "--out", tmp_path / "run", cwd=tmp_path)
    assert p.returncode == 0
    assert "hand-written cell(s) read by dataflow: Cell" in p.stderr, p.stderr  # the discovered root


def test_missing_script_is_exit_3_with_one_line(tmp_path):
    p = rnndoctor("diagnose", tmp_path / "nope.py", cwd=tmp_path)
    assert p.returncode == 3
    assert p.stderr.strip().count("\n") == 0 and "no such script" in p.stderr


def test_syntax_error_is_exit_3(tmp_path):
    (tmp_path / "bad.py").write_text("def (:\n")
    p = rnndoctor("diagnose", tmp_path / "bad.py", cwd=tmp_path)
    assert p.returncode == 3 and "syntax error" in p.stderr


def test_fail_on_sets_exit_code(tmp_path):
    p = rnndoctor("diagnose", ROOT / "fixtures" / "parity_stuck.py", "--max-steps", 200, "--out", tmp_path / "run", "--fail-on", "error", "--quiet", cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    assert "stuck-at-chance" in p.stderr


def test_report_rediagnoses_a_saved_run_and_rejects_a_corrupt_one(tmp_path):
    path = script(tmp_path, "for i in range(4):\n    step(i)\n")
    assert rnndoctor("diagnose", path, "--out", tmp_path / "run", cwd=tmp_path).returncode == 0
    (tmp_path / "run" / "findings.json").unlink()
    p = rnndoctor("report", tmp_path / "run", cwd=tmp_path)
    assert p.returncode == 0 and (tmp_path / "run" / "findings.json").is_file()
    p = rnndoctor("report", tmp_path / "missing", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "meta.json").write_text("{")
    p = rnndoctor("report", tmp_path / "corrupt", cwd=tmp_path)
    assert p.returncode == 2 and "corrupt" in p.stderr and p.stderr.strip().count("\n") == 0


def test_explain_and_rules(tmp_path):
    p = rnndoctor("explain", "stuck-at-chance", cwd=tmp_path)
    assert p.returncode == 0 and "Why it matters" in p.stdout and "loss_fraction=0.9" in p.stdout
    p = rnndoctor("explain", "no-such-rule", cwd=tmp_path)
    assert p.returncode == 2 and "no rule with id" in p.stderr
    p = rnndoctor("rules", cwd=tmp_path)
    assert "non-finite" in p.stdout and "stuck-at-chance" in p.stdout
    p = rnndoctor("rules", "--markdown", cwd=tmp_path)  # a real process's stdout: the catalogue's non-ASCII text survives
    assert p.returncode == 0 and p.stdout == (ROOT / "docs" / "findings.md").read_text(encoding="utf-8")


def test_progress_line_shows_steps_rate_and_findings_so_far():
    import io

    from rnndoctor.runner import _Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    class FakeWatch:
        def findings_so_far(self):
            return ["stuck-at-chance", "duplicate-samples"]

    out = Tty()
    bar = _Progress(out, enabled=True)
    bar.watch = FakeWatch()
    bar.last_judged -= 60
    bar(42)
    line = out.getvalue()
    assert "step 42" in line and "steps/s" in line and "findings: stuck-at-chance, duplicate-samples" in line
    quiet = io.StringIO()  # not a terminal: no progress line in logs
    _Progress(quiet, enabled=True)(42)
    assert quiet.getvalue() == ""


def test_findings_so_far_reads_the_run_while_it_is_recorded(tmp_path):
    import torch
    import torch.nn.functional as F
    from torch import nn

    import rnndoctor

    model = nn.Sequential(nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False) as run:
        for _ in range(30):
            loss = F.cross_entropy(model(torch.randn(8, 3)) * float("nan"), torch.randint(0, 2, (8,)))
            opt.zero_grad(); loss.backward(); opt.step()
        assert "non-finite" in run.findings_so_far()


def test_max_steps_reached_by_the_last_step_of_a_manual_update_loop(tmp_path):
    """A loop without an optimizer closes its last step at exit; that must not raise."""
    path = tmp_path / "manual.py"
    path.write_text(textwrap.dedent("""
        import torch, torch.nn as nn, torch.nn.functional as F
        lstm = nn.LSTM(1, 4, batch_first=True)
        for _ in range(3):
            loss = lstm(torch.randn(2, 5, 1))[0].pow(2).mean()
            lstm.zero_grad(); loss.backward()
            with torch.no_grad():
                for p in lstm.parameters():
                    p -= 0.1 * p.grad
    """))
    p = rnndoctor("diagnose", path, "--max-steps", 3, "--out", tmp_path / "run", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert findings_json(tmp_path / "run" / "findings.json")["run"]["steps"] == 3
