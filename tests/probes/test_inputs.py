"""The inputs probe: statistics of the model's input, labelled by the pass they came from."""

import json

import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor


def test_input_rows_say_whether_the_pass_trained_or_evaluated(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True):
        for _ in range(3):
            x = torch.randn(8, 3) * 20
            loss = F.cross_entropy(model(x), (x[:, 0] > 0).long())
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                model(x)
    rows = [json.loads(line) for line in (tmp_path / "r" / "signals" / "inputs.jsonl").read_text().splitlines()]
    assert [r["mode"] for r in rows] == ["train", "eval"] * 3
    assert all(r["abs_max"] > 10 and 0 < r["frac_large"] < 1 for r in rows)


def _char_loop(tmp_path, *, reset_per_char: bool):
    """A char-RNN trained one character per call, with a sampling loop between steps that
    runs with grad enabled and carries its state (spro/char-rnn.pytorch's generate())."""
    torch.manual_seed(0)
    emb, gru, dec = nn.Embedding(10, 8), nn.GRU(8, 8), nn.Linear(8, 10)
    model = nn.ModuleDict({"emb": emb, "gru": gru, "dec": dec})
    opt = torch.optim.Adam(model.parameters(), lr=0.01)

    def step(tokens, h):
        out, h = gru(emb(tokens).unsqueeze(0), h)
        return dec(out[0]), h

    with rnndoctor.watch(model, out=tmp_path / "r", summary=False, strict=True) as run:
        for i in range(12):
            x = torch.randint(0, 10, (4, 6))
            h = torch.zeros(1, 4, 8)
            loss = 0
            for c in range(5):
                if reset_per_char:
                    h = torch.zeros(1, 4, 8)
                logits, h = step(x[:, c], h)
                loss = loss + F.cross_entropy(logits, x[:, c + 1])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i % 3 == 2:  # generate(): grad on, state carried, never backpropagated
                h, tok = torch.zeros(1, 1, 8), torch.tensor([1])
                for _ in range(8):
                    logits, h = step(tok, h)
                    tok = logits.argmax(1)
    rows = [json.loads(line) for line in (tmp_path / "r" / "signals" / "rnn_inputs.jsonl").read_text().splitlines()]
    return run.diagnosis.ids(), rows


def test_sampling_calls_with_grad_are_not_training_calls(tmp_path):
    ids, rows = _char_loop(tmp_path, reset_per_char=True)
    assert "no-recurrence" in ids
    trained = [r for r in rows if r["backward"] == 1]
    sampled = [r for r in rows if r["backward"] == 0]
    assert len(trained) == 12 * 5 and len(sampled) == 4 * 8
    assert any(r["hx_zero"] == 0 for r in sampled)  # the sampling loop carried its state


def test_a_carried_state_in_training_is_recurrence(tmp_path):
    ids, _ = _char_loop(tmp_path, reset_per_char=False)
    assert "no-recurrence" not in ids


def test_embedded_padding_is_found_without_padding_idx():
    from rnndoctor.probes.data import data_steps, padded_lengths

    emb = nn.Embedding(10, 4)
    ids = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 0, 0, 0], [1, 2, 3, 4, 5], [8, 0, 0, 0, 0]])
    with torch.no_grad():
        x = emb(ids)
    assert data_steps(x).tolist() == (ids != 0).tolist()
    t, hist, interior = padded_lengths(x, batch_first=True)
    assert t == 5 and hist.tolist() == [0, 1, 1, 1, 0, 1] and float(interior) == 0.0
    # full-length sequences whose last vectors all differ: nothing is padding
    full = torch.tensor([[3, 4, 5], [6, 7, 8], [1, 2, 9]])
    with torch.no_grad():
        assert data_steps(emb(full)).all()
    # every source ends in one EOS token (a seq2seq tutorial's digits + [EOS]): data, not padding
    eos = torch.tensor([[3, 4, 5, 1], [6, 7, 8, 1], [2, 2, 9, 1]])
    with torch.no_grad():
        assert data_steps(emb(eos)).all()
    # ... but EOS then padding, or padding that evens out lengths, is still padding
    padded = torch.tensor([[3, 4, 1, 0, 0], [6, 7, 8, 1, 0], [2, 1, 0, 0, 0]])
    with torch.no_grad():
        assert data_steps(emb(padded)).tolist() == (padded != 0).tolist()


def _names(tmp_path, *, packed: bool):
    """A name classifier as hunkim/PyTorchZeroToAll writes it: ids post-padded with 0, an
    embedding without padding_idx, the GRU's final state read for the class."""
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(0)
    emb, gru, fc = nn.Embedding(30, 16), nn.GRU(16, 16), nn.Linear(16, 4)
    model = nn.ModuleDict({"emb": emb, "gru": gru, "fc": fc})
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    with rnndoctor.watch(model, out=tmp_path / ("p" if packed else "u"), summary=False, strict=True) as run:
        for _ in range(30):
            lengths = torch.randint(3, 13, (32,)).sort(descending=True).values
            ids = torch.zeros(32, 12, dtype=torch.long)
            for i, n in enumerate(lengths.tolist()):
                ids[i, :n] = torch.randint(1, 30, (n,))
            y = ids[:, 0] % 4
            x = emb(ids.t())  # S x B x I
            if packed:
                x = pack_padded_sequence(x, lengths)
            _, h = gru(x)
            loss = F.cross_entropy(fc(h[-1]), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return run.diagnosis.ids()


def test_unpacked_embedded_padding_is_not_masked(tmp_path):
    assert "padding-not-masked" in _names(tmp_path, packed=False)
    assert "padding-not-masked" not in _names(tmp_path, packed=True)
