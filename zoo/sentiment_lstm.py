"""Sentiment analysis with a packed LSTM (bentrevett's tutorial 2, the LSTM notebook).

Upstream: https://github.com/bentrevett/pytorch-sentiment-analysis/blob/main/2%20-%20Recurrent%20Neural%20Networks.ipynb
Licence: MIT
Changes: IMDB, the tokenizer, torchtext's vocab and GloVe replaced by a generated corpus
  (neutral filler words with one or three sentiment words anywhere in the sentence, label =
  majority polarity) and a Counter vocabulary; the embedding keeps its N(0, 1) init;
  embedding 100, hidden 32, batch 64, bidirectional = False (upstream 300, 300, 512, True:
  a backward direction reads every real word whatever the padding, so dropping the packing
  changed nothing there); best weights kept in memory instead of lstm.pt; the tqdm bars
  and plots dropped; a progress line every 200 steps.
Steps: 300

Bug: pack-removed
Expect: padding-not-masked
Allow: stuck-at-chance, vanishing-gradient-through-time
Why: packing dropped: the post-padded batch goes through the LSTM whole and h_n is read after up to 36 padding steps (at chance for ~700 steps)
- packed_output, (hidden, cell) = self.lstm(packed_embedded)
+ packed_output, (hidden, cell) = self.lstm(embedded)
- output, output_length = nn.utils.rnn.pad_packed_sequence(packed_output)
+ output = packed_output

Bug: embedding-scaled
Expect: unnormalized-inputs
Allow: gate-saturation
Why: transformer habit: embeddings multiplied by sqrt(embedding_dim) = 10, so the LSTM gets inputs of std 10 and its gates saturate
- embedded = self.dropout(self.embedding(ids))
+ embedded = self.dropout(self.embedding(ids) * math.sqrt(self.embedding.embedding_dim))

Bug: no-eval-mode
Expect: eval-in-train-mode
Why: evaluate() lost model.eval(), so validation (which picks the kept weights) and test run with dropout 0.5 active
- model.eval()
+ pass
"""

import collections
import copy
import math
import random

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim

seed = 1234
random.seed(seed)
np.random.seed(seed)
torch.manual_seed(seed)
torch.backends.cudnn.deterministic = True

# ---- a generated "IMDB": the label is the majority polarity of the sentiment words ----
POSITIVE = "great good superb wonderful brilliant enjoyable moving charming clever fun delightful masterpiece".split()
NEGATIVE = "terrible bad awful boring dull weak poor tedious clumsy mess dreadful waste".split()
NEUTRAL = ("the a film movie plot actor actress story scene script director camera music score "
           "this that it was is and but with of in on at to for by from as character ending "
           "opening sequence dialogue cast role screen minutes hour watched saw thought felt "
           "seemed looked sounded audience critics cinema studio budget sequel remake season "
           "episode series book novel version scenes moments lines shot shots set sets").split()


def make_example(rng):
    length = rng.randint(4, 40)
    tokens = [rng.choice(NEUTRAL) for _ in range(length)]
    n_sent = rng.choice([1, 3])
    polarities = [rng.randint(0, 1) for _ in range(n_sent)]
    for pol, pos in zip(polarities, rng.sample(range(length), n_sent)):
        tokens[pos] = rng.choice(POSITIVE if pol else NEGATIVE)
    label = int(sum(polarities) * 2 > n_sent)
    return {"tokens": tokens, "label": label, "length": length}


rng = random.Random(seed)
train_data = [make_example(rng) for _ in range(8600)]
test_data = [make_example(rng) for _ in range(2000)]

test_size = 0.25
n_valid = int(len(train_data) * test_size)
valid_data = train_data[:n_valid]
train_data = train_data[n_valid:]

min_freq = 5
special_tokens = ["<unk>", "<pad>"]
counts = collections.Counter(t for ex in train_data for t in ex["tokens"])
itos = special_tokens + sorted(t for t, c in counts.items() if c >= min_freq)
stoi = {t: i for i, t in enumerate(itos)}

unk_index = stoi["<unk>"]
pad_index = stoi["<pad>"]


def numericalize_example(example):
    ids = [stoi.get(t, unk_index) for t in example["tokens"]]
    return {"ids": torch.tensor(ids), "label": torch.tensor(example["label"]),
            "length": torch.tensor(example["length"])}


train_data = [numericalize_example(ex) for ex in train_data]
valid_data = [numericalize_example(ex) for ex in valid_data]
test_data = [numericalize_example(ex) for ex in test_data]


def get_collate_fn(pad_index):
    def collate_fn(batch):
        batch_ids = [i["ids"] for i in batch]
        batch_ids = nn.utils.rnn.pad_sequence(
            batch_ids, padding_value=pad_index, batch_first=True
        )
        batch_length = [i["length"] for i in batch]
        batch_length = torch.stack(batch_length)
        batch_label = [i["label"] for i in batch]
        batch_label = torch.stack(batch_label)
        batch = {"ids": batch_ids, "length": batch_length, "label": batch_label}
        return batch

    return collate_fn


def get_data_loader(dataset, batch_size, pad_index, shuffle=False):
    collate_fn = get_collate_fn(pad_index)
    data_loader = torch.utils.data.DataLoader(
        dataset=dataset,
        batch_size=batch_size,
        collate_fn=collate_fn,
        shuffle=shuffle,
    )
    return data_loader


batch_size = 64
train_data_loader = get_data_loader(train_data, batch_size, pad_index, shuffle=True)
valid_data_loader = get_data_loader(valid_data, batch_size, pad_index)
test_data_loader = get_data_loader(test_data, batch_size, pad_index)


class LSTM(nn.Module):
    def __init__(
        self,
        vocab_size,
        embedding_dim,
        hidden_dim,
        output_dim,
        n_layers,
        bidirectional,
        dropout_rate,
        pad_index,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_index)
        self.lstm = nn.LSTM(
            embedding_dim,
            hidden_dim,
            n_layers,
            bidirectional=bidirectional,
            dropout=dropout_rate,
            batch_first=True,
        )
        self.fc = nn.Linear(hidden_dim * 2 if bidirectional else hidden_dim, output_dim)
        self.dropout = nn.Dropout(dropout_rate)

    def forward(self, ids, length):
        # ids = [batch size, seq len]
        # length = [batch size]
        embedded = self.dropout(self.embedding(ids))
        # embedded = [batch size, seq len, embedding dim]
        packed_embedded = nn.utils.rnn.pack_padded_sequence(embedded, length, batch_first=True, enforce_sorted=False)
        packed_output, (hidden, cell) = self.lstm(packed_embedded)
        # hidden = [n layers * n directions, batch size, hidden dim]
        # cell = [n layers * n directions, batch size, hidden dim]
        output, output_length = nn.utils.rnn.pad_packed_sequence(packed_output)
        # output = [batch size, seq len, hidden dim * n directions]
        if self.lstm.bidirectional:
            hidden = self.dropout(torch.cat([hidden[-1], hidden[-2]], dim=-1))
            # hidden = [batch size, hidden dim * 2]
        else:
            hidden = self.dropout(hidden[-1])
            # hidden = [batch size, hidden dim]
        prediction = self.fc(hidden)
        # prediction = [batch size, output dim]
        return prediction


vocab_size = len(itos)
embedding_dim = 100
hidden_dim = 32
output_dim = 2
n_layers = 2
bidirectional = False
dropout_rate = 0.5

model = LSTM(
    vocab_size,
    embedding_dim,
    hidden_dim,
    output_dim,
    n_layers,
    bidirectional,
    dropout_rate,
    pad_index,
)


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


print(f"The model has {count_parameters(model):,} trainable parameters")


def initialize_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_normal_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LSTM):
        for name, param in m.named_parameters():
            if "bias" in name:
                nn.init.zeros_(param)
            elif "weight" in name:
                nn.init.orthogonal_(param)


model.apply(initialize_weights)

lr = 5e-4
optimizer = optim.Adam(model.parameters(), lr=lr)
criterion = nn.CrossEntropyLoss()
device = torch.device("cpu")
model = model.to(device)
criterion = criterion.to(device)
step = 0


def train(dataloader, model, criterion, optimizer, device):
    global step
    model.train()
    epoch_losses = []
    epoch_accs = []
    for batch in dataloader:
        ids = batch["ids"].to(device)
        length = batch["length"]
        label = batch["label"].to(device)
        prediction = model(ids, length)
        loss = criterion(prediction, label)
        accuracy = get_accuracy(prediction, label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        epoch_losses.append(loss.item())
        epoch_accs.append(accuracy.item())
        step += 1
        if step % 200 == 0:
            print(f"step {step}: loss {np.mean(epoch_losses[-50:]):.3f}, acc {np.mean(epoch_accs[-50:]):.3f}")
    return np.mean(epoch_losses), np.mean(epoch_accs)


def evaluate(dataloader, model, criterion, device):
    model.eval()
    epoch_losses = []
    epoch_accs = []
    with torch.no_grad():
        for batch in dataloader:
            ids = batch["ids"].to(device)
            length = batch["length"]
            label = batch["label"].to(device)
            prediction = model(ids, length)
            loss = criterion(prediction, label)
            accuracy = get_accuracy(prediction, label)
            epoch_losses.append(loss.item())
            epoch_accs.append(accuracy.item())
    return np.mean(epoch_losses), np.mean(epoch_accs)


def get_accuracy(prediction, label):
    batch_size, _ = prediction.shape
    predicted_classes = prediction.argmax(dim=-1)
    correct_predictions = predicted_classes.eq(label).sum()
    accuracy = correct_predictions / batch_size
    return accuracy


n_epochs = 10
best_valid_loss = float("inf")
best_state = None
metrics = collections.defaultdict(list)

for epoch in range(n_epochs):
    train_loss, train_acc = train(
        train_data_loader, model, criterion, optimizer, device
    )
    valid_loss, valid_acc = evaluate(valid_data_loader, model, criterion, device)
    metrics["train_losses"].append(train_loss)
    metrics["train_accs"].append(train_acc)
    metrics["valid_losses"].append(valid_loss)
    metrics["valid_accs"].append(valid_acc)
    if valid_loss < best_valid_loss:
        best_valid_loss = valid_loss
        best_state = copy.deepcopy(model.state_dict())
    print(f"epoch: {epoch}")
    print(f"train_loss: {train_loss:.3f}, train_acc: {train_acc:.3f}")
    print(f"valid_loss: {valid_loss:.3f}, valid_acc: {valid_acc:.3f}")

model.load_state_dict(best_state)
test_loss, test_acc = evaluate(test_data_loader, model, criterion, device)
print(f"test_loss: {test_loss:.3f}, test_acc: {test_acc:.3f}")
