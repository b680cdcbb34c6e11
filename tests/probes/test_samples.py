"""Sample fingerprints however the data arrives: token ids before an embedding, a model
called once per character with batch size 1, an LSTM and a head called as separate modules,
float64 with values beyond float32's range. Each case is a short real training run; the
duplicate and label-consistency rules must fire on the broken data and stay quiet on the
healthy twin."""

from __future__ import annotations

import json
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnndoctor


def ids(w) -> set[str]:
    return {f.id for f in w.diagnosis.findings}


def samples(out) -> list[dict]:
    path = out / "signals" / "samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class TokenClassifier(nn.Module):
    def __init__(self, vocab: int = 50) -> None:
        super().__init__()
        self.emb, self.rnn, self.out = nn.Embedding(vocab, 16), nn.GRU(16, 16, batch_first=True), nn.Linear(16, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(self.emb(tokens))[1][-1])


def _train_tokens(tmp_path, pool: torch.Tensor, labels_of, steps: int = 60) -> rnndoctor.Watch:
    torch.manual_seed(0)
    model = TokenClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with rnndoctor.watch(model, out=tmp_path, summary=False) as w:
        for _ in range(steps):
            batch = pool[torch.randint(len(pool), (32,))]
            loss = F.cross_entropy(model(batch), labels_of(batch))
            opt.zero_grad(); loss.backward(); opt.step()
    return w


def test_token_ids_are_fingerprinted_and_a_tiny_pool_of_sequences_is_found(tmp_path):
    """30 distinct token sequences drawn 1920 times (the real-programs issue's case)."""
    g = torch.Generator().manual_seed(1)
    pool = torch.randint(50, (30, 12), generator=g)
    w = _train_tokens(tmp_path / "few", pool, lambda b: (b[:, 0] % 2).long())
    assert samples(tmp_path / "few"), "integer inputs got no fingerprint"
    assert "duplicate-samples" in ids(w) and "inconsistent-labels" not in ids(w)
    many = torch.randint(50, (100_000, 12), generator=g)
    healthy = _train_tokens(tmp_path / "many", many, lambda b: (b[:, 0] % 2).long())
    assert not {"duplicate-samples", "inconsistent-labels"} & ids(healthy)


def test_token_ids_with_labels_drawn_at_random_are_inconsistent(tmp_path):
    g = torch.Generator().manual_seed(2)
    pool = torch.randint(50, (40, 12), generator=g)
    w = _train_tokens(tmp_path, pool, lambda b: torch.randint(2, (len(b),)))
    assert "inconsistent-labels" in ids(w)


class CharRNN(nn.Module):
    """spro/practical-pytorch's classifier: one call per character, batch size 1."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int) -> None:
        super().__init__()
        self.n_hidden = n_hidden
        self.i2h = nn.Linear(n_in + n_hidden, n_hidden)
        self.i2o = nn.Linear(n_in + n_hidden, n_out)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = torch.cat((x, h), 1)
        return F.log_softmax(self.i2o(both), dim=1), torch.tanh(self.i2h(both))


def _train_chars(tmp_path, label_of, steps: int = 400) -> rnndoctor.Watch:
    torch.manual_seed(0)
    rng = random.Random(0)
    letters = "abcdefgh"
    names = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 6))) for _ in range(40)]
    model = CharRNN(len(letters), 16, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with rnndoctor.watch(model, out=tmp_path, summary=False) as w:
        for _ in range(steps):
            name = rng.choice(names)
            x = torch.zeros(len(name), 1, len(letters))
            for i, ch in enumerate(name):
                x[i, 0, letters.index(ch)] = 1
            h = torch.zeros(1, 16)
            for i in range(len(name)):
                out, h = model(x[i], h)
            loss = F.nll_loss(out, torch.tensor([label_of(name, rng)]))
            opt.zero_grad(); loss.backward(); opt.step()
    return w


def test_a_name_fed_one_character_per_call_is_one_sample(tmp_path):
    """The label depends on the whole name; fingerprinting only the last character's call
    (or the first) would see the same input with different labels."""
    healthy = _train_chars(tmp_path / "ok", lambda name, rng: (name.count("a") + len(name)) % 3)
    rows = samples(tmp_path / "ok")
    assert rows and len(rows) == len({r["step"] for r in rows}), "one sample per step (batch 1)"
    assert "inconsistent-labels" not in ids(healthy)
    noisy = _train_chars(tmp_path / "noisy", lambda name, rng: rng.randrange(3))
    assert "inconsistent-labels" in ids(noisy)


def test_separate_modules_are_fingerprinted_by_the_data_not_the_activations(tmp_path):
    """An LSTM and a head called one after the other (no container): the head's input is
    the LSTM's saturated output, identical for every sample; the data is the LSTM's input."""
    torch.manual_seed(0)
    r, f = nn.LSTM(3, 8, batch_first=True), nn.Linear(8, 2)
    opt = torch.optim.Adam([*r.parameters(), *f.parameters()])
    with rnndoctor.watch(nn.ModuleList([r, f]), out=tmp_path, summary=False) as w:
        for _ in range(40):
            x = torch.randn(16, 5, 3) * 1e4  # saturates every gate: h is ±1 whatever the sample
            loss = F.cross_entropy(f(r(x)[0][:, -1]), (x[:, 0, 0] > 0).long())
            opt.zero_grad(); loss.backward(); opt.step()
    assert samples(tmp_path)
    assert "inconsistent-labels" not in ids(w)


class Names(torch.utils.data.Dataset):
    """Fixed inputs; the label is either computed from the input or drawn at every fetch."""

    def __init__(self, random_label: bool) -> None:
        g = torch.Generator().manual_seed(3)
        self.x = torch.randn(500, 6, 4, generator=g)
        self.random_label = random_label

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        x = self.x[i]
        y = random.randrange(2) if self.random_label else int(x[0, 0] > 0)
        return x, y


@pytest.mark.parametrize("random_label", [True, False], ids=["label-drawn-per-fetch", "label-from-input"])
def test_a_label_drawn_at_every_fetch_is_inconsistent(tmp_path, random_label):
    torch.manual_seed(0)
    random.seed(0)
    rnn, head = nn.GRU(4, 16, batch_first=True), nn.Linear(16, 2)
    model = nn.ModuleDict({"rnn": rnn, "head": head})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loader = torch.utils.data.DataLoader(Names(random_label), batch_size=32, shuffle=True)
    with rnndoctor.watch(model, out=tmp_path, summary=False) as w:
        for _ in range(2):
            for x, y in loader:
                loss = F.cross_entropy(head(rnn(x)[1][-1]), y)
                opt.zero_grad(); loss.backward(); opt.step()
    assert ("inconsistent-labels" in ids(w)) is random_label
    assert "resampled-parameters" not in ids(w)


class _Strokes(torch.utils.data.Dataset):
    """8x8 "digits": a fixed template per class, shifted and noised per index (seeded from
    it). ``redraw`` draws the templates anew on every call from the global RNG, as a
    generator that forgets its task's parameters (seed 004); ``augment`` adds fresh noise
    per call instead, which keeps what makes the class."""

    def __init__(self, *, redraw=False, augment=False):
        self.redraw, self.augment = redraw, augment
        self.templates = (torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(7)) > 0.6).float()
        self.labels = torch.randint(0, 4, (512,), generator=torch.Generator().manual_seed(3))

    def __len__(self):
        return 512

    def __getitem__(self, i):
        label = int(self.labels[i])
        g = torch.Generator().manual_seed(i)
        template = (torch.rand(4, 8, 8) > 0.6).float()[label] if self.redraw else self.templates[label]
        x = torch.roll(template, int(torch.randint(-1, 2, (1,), generator=g)), dims=1) + 0.1 * torch.randn(8, 8, generator=g)
        if self.augment:
            x = x + 0.1 * torch.randn(8, 8)
        return x, label


def _strokes_ids(tmp_path, **kw):
    torch.manual_seed(0)
    lstm, fc = nn.LSTM(8, 16, batch_first=True), nn.Linear(16, 4)
    model = nn.ModuleDict({"lstm": lstm, "fc": fc})
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loader = torch.utils.data.DataLoader(_Strokes(**kw), batch_size=8, shuffle=True)
    with rnndoctor.watch(model, out=tmp_path / "-".join(sorted(kw)) or "plain", summary=False, strict=True) as run:
        for _ in range(2):
            for x, y in loader:
                out, _ = lstm(x)
                loss = F.cross_entropy(fc(out[:, -1]), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
    return run.diagnosis.ids()


def test_templates_redrawn_per_fetch_are_resampled_parameters(tmp_path):
    """The label stays with its index, but the class's template is drawn anew on every call
    (zoo lstm_sequential_digits): new inputs every fetch, and nothing learned from them."""
    ids = _strokes_ids(tmp_path, redraw=True)
    assert "resampled-parameters" in ids and "stuck-at-chance" in ids
    assert not {"resampled-parameters", "stuck-at-chance"} & set(_strokes_ids(tmp_path, augment=True))
    assert not {"resampled-parameters", "stuck-at-chance"} & set(_strokes_ids(tmp_path))


class _SeqFirst(nn.Module):
    """Takes ``[B, T, F]`` (or token ids ``[T, B]``) and runs a sequence-first GRU."""

    def __init__(self, tokens: bool) -> None:
        super().__init__()
        self.tokens = tokens
        self.emb = nn.Embedding(8, 8) if tokens else None
        self.rnn, self.out = nn.GRU(8 if tokens else 3, 16), nn.Linear(16, 2)

    def forward(self, x):
        seq = self.emb(x) if self.tokens else x.transpose(0, 1)
        return self.out(self.rnn(seq)[1][-1])


@pytest.mark.parametrize("tokens", [False, True], ids=["features-B-T-F-transposed-inside", "token-ids-T-B"])
def test_the_batch_dimension_is_found_whichever_way_the_model_is_fed(tmp_path, tokens):
    """A model that transposes ``[B, T, F]`` for a sequence-first GRU, or takes token ids
    ``[T, B]``: the samples are its batch rows however the RNN is declared. 40 inputs, each
    with two labels at random: inconsistent; the same inputs with their own label: not."""
    g = torch.Generator().manual_seed(0)
    pool = torch.randint(8, (40, 10), generator=g) if tokens else torch.randn(40, 10, 3, generator=g)
    own = torch.randint(2, (40,), generator=g)
    for name, label_of in (("noisy", lambda i: torch.randint(2, i.shape, generator=g)), ("clean", lambda i: own[i])):
        torch.manual_seed(0)
        model = _SeqFirst(tokens)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        with rnndoctor.watch(model, out=tmp_path / name, summary=False) as w:
            for _ in range(60):
                i = torch.randint(40, (32,), generator=g)
                x = pool[i].T if tokens else pool[i]
                loss = F.cross_entropy(model(x), label_of(i))
                opt.zero_grad(); loss.backward(); opt.step()
        assert len(rnndoctor.load_run(tmp_path / name)["samples"]) >= 60 * 32 * 0.9
        assert ("inconsistent-labels" in ids(w)) == (name == "noisy"), (name, ids(w))


def test_an_evaluation_pass_fingerprints_the_data_not_the_embedding(tmp_path):
    """Under no_grad an embedding's output has no grad_fn: fingerprinting it with the token
    ids made every evaluation of the same validation set look new (its weights move). The
    training set evaluated as validation is then leakage, and the same inputs match."""
    g = torch.Generator().manual_seed(0)
    train = torch.randint(50, (300, 12), generator=g)
    torch.manual_seed(0)
    model = TokenClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with rnndoctor.watch(model, out=tmp_path, summary=False) as w:
        for step in range(120):
            batch = train[torch.randint(300, (16,), generator=g)]
            loss = F.cross_entropy(model(batch), batch[:, 0] % 2)
            opt.zero_grad(); loss.backward(); opt.step()
            if step % 30 == 29:
                model.eval()
                with torch.no_grad():
                    for i in range(0, 300, 100):
                        F.cross_entropy(model(train[i:i + 100]), train[i:i + 100, 0] % 2)
                model.train()
    s = rnndoctor.load_run(tmp_path)["samples"]
    ev = s[s["mode"] == "eval"]
    # passes over the same 300 inputs (as long as the fingerprint budget lasts): 300 distinct
    assert len(ev) >= 600 and len({(round(a, 6), round(b, 6)) for a, b in zip(ev["x1"], ev["x2"])}) == 300
    assert any(f.id == "duplicate-samples" and "evaluation" in f.title for f in w.diagnosis.findings)


def test_packed_sequences_are_fingerprinted_and_keep_their_padded_width(tmp_path):
    """A PackedSequence handed to the model (packed outside) is still data; a batch padded to
    30 and packed inside the model records 30 as the width its lengths are judged against."""
    from torch.nn.utils.rnn import pack_padded_sequence

    class Packs(nn.Module):
        def __init__(self, inside: bool) -> None:
            super().__init__()
            self.inside, self.rnn, self.out = inside, nn.GRU(1, 8, batch_first=True), nn.Linear(8, 2)

        def forward(self, x, lengths=None):
            if self.inside:
                x = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            return self.out(self.rnn(x)[1][-1])

    for inside in (False, True):
        torch.manual_seed(0)
        model = Packs(inside)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        out = tmp_path / str(inside)
        with rnndoctor.watch(model, out=out, summary=False):
            for _ in range(10):
                lengths = torch.randint(1, 30, (16,))
                x = torch.randn(16, 30, 1) * (torch.arange(30)[None, :, None] < lengths[:, None, None])
                arg = (x, lengths) if inside else (pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False),)
                loss = F.cross_entropy(model(*arg), (x.sum((1, 2)) > 0).long())
                opt.zero_grad(); loss.backward(); opt.step()
        rec = rnndoctor.load_run(out)
        assert len(rec["samples"]) == 160
        ri = rec["rnn_inputs"]
        assert (ri["packed"] == 1).all()
        if inside:
            assert (ri["padded_width"] == 30).all()
        else:
            assert "padded_width" not in ri or ri["padded_width"].isna().all()


@pytest.mark.parametrize("leaks", [True, False], ids=["val-is-train", "val-held-out"])
def test_an_accuracy_only_evaluation_is_compared_with_training(tmp_path, leaks):
    """An evaluation that computes no loss (``(model(x).argmax(1) == y).sum()``) has no
    target to delimit its batches; its calls are still its inputs, and when they are the
    training set's, that is leakage."""
    g = torch.Generator().manual_seed(0)
    train = torch.randint(50, (300, 12), generator=g)
    val = train[:150] if leaks else torch.randint(50, (150, 12), generator=g)
    torch.manual_seed(0)
    model = TokenClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with rnndoctor.watch(model, out=tmp_path, summary=False) as w:
        for step in range(100):
            batch = train[torch.randint(300, (16,), generator=g)]
            loss = F.cross_entropy(model(batch), batch[:, 0] % 2)
            opt.zero_grad(); loss.backward(); opt.step()
            if step % 25 == 24:
                model.eval()
                with torch.no_grad():
                    hits = sum(int((model(val[i:i + 50]).argmax(1) == val[i:i + 50, 0] % 2).sum()) for i in range(0, 150, 50))
                model.train()
    ev = rnndoctor.load_run(tmp_path)["samples"].query("mode == 'eval'")
    assert len(ev) >= 150 and ev["y"].isna().all()
    leak = [f for f in w.diagnosis.findings if f.id == "duplicate-samples" and "evaluation" in f.title]
    assert bool(leak) == leaks


def test_an_evaluation_off_the_data_schedule_is_still_compared_with_training(tmp_path):
    """Evaluating every few epochs rarely lands on a data step, and by then the training
    samples' budget is spent: evaluation inputs have a budget of their own, and the training
    loss after an evaluation never joins the evaluation's group."""
    g = torch.Generator().manual_seed(0)
    train = torch.randint(50, (300, 12), generator=g)
    torch.manual_seed(0)
    model = TokenClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with rnndoctor.watch(model, out=tmp_path, summary=False) as w:
        for step in range(160):
            batch = train[torch.randint(300, (32,), generator=g)]  # 2048 samples by step 64
            loss = F.cross_entropy(model(batch), batch[:, 0] % 2)
            opt.zero_grad(); loss.backward(); opt.step()
            if step in (99, 159):  # off the schedule (first 50, then every 100)
                model.eval()
                with torch.no_grad():
                    hits = sum(int((model(train[i:i + 64]).argmax(1) == train[i:i + 64, 0] % 2).sum()) for i in (0, 64))
                model.train()
    ev = rnndoctor.load_run(tmp_path)["samples"].query("mode == 'eval'")
    assert len(ev) == 256 and ev["y"].isna().all()
    assert [f for f in w.diagnosis.findings if f.id == "duplicate-samples" and "evaluation" in f.title]
