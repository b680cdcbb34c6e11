"""recorder.py on its own: rows with device tensors become JSON lines at the flush, deferred
jobs fill values first, finalizers rewrite or drop rows, the writer choice."""

import json

import pytest
import torch

from rnndoctor.recorder import Part, Recorder, writer_in_background


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("writer", ["inline", "thread"])
def test_tensors_are_written_at_the_flush_not_before(tmp_path, writer):
    rec = Recorder(tmp_path, background=writer == "thread")
    rec.add("steps", {"step": 0, "mode": "train", "loss": torch.tensor(0.25), "n_classes": 2})
    assert rec.pending == 1 and not (tmp_path / "signals" / "steps.jsonl").exists()
    rec.flush(wait=True)
    assert lines(tmp_path / "signals" / "steps.jsonl") == [{"step": 0, "mode": "train", "loss": 0.25, "n_classes": 2}]
    rec.close()


def test_deferred_jobs_fill_rows_before_the_transfer_and_finalizers_see_host_values(tmp_path):
    rec = Recorder(tmp_path, background=False)
    row = {"step": 0, "mode": "train"}
    stacked = torch.tensor([1.5, 2.5])

    def take():
        def job():
            row["loss"] = Part(stacked, 1)

        return job

    rec.before_flush(take)
    seen = []
    rec.add("steps", row, finalize=lambda r: seen.append(type(r["loss"])) or r)
    rec.add("steps", {"step": 1, "mode": "train"}, finalize=lambda r: None)  # dropped
    rec.close()
    assert lines(tmp_path / "signals" / "steps.jsonl") == [{"step": 0, "mode": "train", "loss": 2.5}]
    assert seen == [float]


def test_a_reused_directory_starts_empty(tmp_path):
    (tmp_path / "signals").mkdir()
    (tmp_path / "signals" / "steps.jsonl").write_text('{"step": 9}\n')
    Recorder(tmp_path, background=False).close()
    assert not (tmp_path / "signals" / "steps.jsonl").exists()


def test_writer_choice():
    assert writer_in_background(True) is True  # a GPU: always the thread
    assert writer_in_background(False, "inline") is False
    assert writer_in_background(False, "thread") is True
    with pytest.raises(ValueError, match="thread"):
        writer_in_background(False, "sometimes")
