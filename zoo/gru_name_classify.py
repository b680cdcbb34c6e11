"""Name -> country classifier: embedding over ASCII codes, GRU over packed padded batches.

Upstream: https://github.com/hunkim/PyTorchZeroToAll/blob/master/13_2_rnn_classification.py
Licence: none stated upstream (educational repository, itself adapted from spro/practical-pytorch, MIT)
Changes: name_dataset.py inlined; NameDataset builds its (name, country) rows from per-country
  syllable sets with a fixed seed (8 countries, skewed shares like names_train.csv.gz, Russian
  largest) instead of reading data/names_*.csv.gz; 1280 training and 640 test names, batch
  128 instead of 256, 100 epochs (1000 steps); HIDDEN_SIZE 32 instead of 100 and the GRU built with
  bidirectional=False (upstream's default bidirectional model feeds fc only the backward
  direction's final state); Variable, .data[0] and DataParallel/cuda branches removed;
  test() runs under eval() and no_grad, every 10 epochs, and prints loss and accuracy.
Steps: 300
Allow: label-imbalance

Bug: no-packing
Expect: padding-not-masked
Why: the padded batch goes into the GRU unpacked, so hidden[-1] is read after the trailing padding
- gru_input = pack_padded_sequence(embedded, seq_lengths.data.cpu().numpy())
+ gru_input = embedded

Bug: reseeded-name-generator
Expect: duplicate-samples
Allow: label-imbalance
Why: a fresh Random(seed) per name: each country always gets the same name, 8 distinct names in 1280
- name = make_name(country, rng)
+ name = make_name(country, random.Random(seed))

Bug: targets-not-sorted
Expect: stuck-at-chance
Allow: prediction-collapse, inconsistent-labels, label-imbalance
Why: the names are sorted by length for packing but the targets are not, so labels no longer match inputs
- target = target[perm_idx]
+ target = target
"""

import math
import random
import time

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

torch.manual_seed(0)
random.seed(0)

# ---------------------------------------------------------------- name_dataset.py

SYLLABLES = {
    "Russian": ["vla", "dim", "ser", "gei", "iva", "nov", "kov", "sky", "pet", "rov", "mik", "hail", "lov",
                "zin", "bor", "tsev", "ush", "ko"],
    "English": ["ham", "ton", "wood", "ley", "wor", "th", "ing", "ford", "ash", "bur", "son", "field", "ster",
                "cliff", "ell"],
    "Arabic": ["ab", "dul", "rah", "man", "ha", "sa", "kha", "lid", "na", "sir", "gha", "zal", "fa", "rid",
               "sha"],
    "Japanese": ["ya", "ma", "mo", "to", "ka", "shi", "ta", "na", "ki", "mu", "ra", "su", "zu", "hi", "ro"],
    "German": ["schm", "idt", "mu", "ller", "berg", "hof", "stein", "mann", "wald", "ner", "bach", "kr",
               "auss", "feld"],
    "Italian": ["ros", "si", "bel", "li", "ni", "gio", "van", "ric", "ci", "ar", "del", "lo", "maz", "za"],
    "Chinese": ["zh", "ang", "li", "wang", "chen", "liu", "yang", "huang", "zhao", "wu", "zhou", "xu"],
    "Korean": ["kim", "park", "lee", "jung", "choi", "ha", "yoon", "jang", "seo", "kwon", "hwang", "ahn"],
}
SHARES = [0.40, 0.17, 0.10, 0.08, 0.08, 0.07, 0.05, 0.05]


def make_name(country, rng):
    sylls = SYLLABLES[country]
    n = rng.randint(2, 4)
    return "".join(rng.choice(sylls) for _ in range(n)).capitalize()


def generate_rows(n, seed):
    rng = random.Random(seed)
    countries = list(SYLLABLES)
    rows = []
    for _ in range(n):
        country = rng.choices(countries, weights=SHARES)[0]
        name = make_name(country, rng)
        rows.append((name, country))
    return rows


class NameDataset(Dataset):
    """ Names dataset."""

    # Initialize your data, download, etc.
    def __init__(self, is_train_set=False):
        rows = generate_rows(1280, seed=1) if is_train_set else generate_rows(640, seed=2)

        self.names = [row[0] for row in rows]
        self.countries = [row[1] for row in rows]
        self.len = len(self.countries)

        self.country_list = list(sorted(set(self.countries)))

    def __getitem__(self, index):
        return self.names[index], self.countries[index]

    def __len__(self):
        return self.len

    def get_countries(self):
        return self.country_list

    def get_country(self, id):
        return self.country_list[id]

    def get_country_id(self, country):
        return self.country_list.index(country)


# ---------------------------------------------------------------- 13_2_rnn_classification.py

# Parameters and DataLoaders
HIDDEN_SIZE = 32
N_LAYERS = 2
BATCH_SIZE = 128
N_EPOCHS = 100

test_dataset = NameDataset(is_train_set=False)
test_loader = DataLoader(dataset=test_dataset,
                         batch_size=BATCH_SIZE, shuffle=True)


train_dataset = NameDataset(is_train_set=True)
train_loader = DataLoader(dataset=train_dataset,
                          batch_size=BATCH_SIZE, shuffle=True)

N_COUNTRIES = len(train_dataset.get_countries())
print(N_COUNTRIES, "countries")
N_CHARS = 128  # ASCII


# Some utility functions
def time_since(since):
    s = time.time() - since
    m = math.floor(s / 60)
    s -= m * 60
    return '%dm %ds' % (m, s)


# pad sequences and sort the tensor
def pad_sequences(vectorized_seqs, seq_lengths, countries):
    seq_tensor = torch.zeros((len(vectorized_seqs), seq_lengths.max())).long()
    for idx, (seq, seq_len) in enumerate(zip(vectorized_seqs, seq_lengths)):
        seq_tensor[idx, :seq_len] = torch.LongTensor(seq)

    # Sort tensors by their length
    seq_lengths, perm_idx = seq_lengths.sort(0, descending=True)
    seq_tensor = seq_tensor[perm_idx]

    # Also sort the target (countries) in the same order
    target = countries2tensor(countries)
    if len(countries):
        target = target[perm_idx]

    return seq_tensor, seq_lengths, target


# Create necessary variables, lengths, and target
def make_variables(names, countries):
    sequence_and_length = [str2ascii_arr(name) for name in names]
    vectorized_seqs = [sl[0] for sl in sequence_and_length]
    seq_lengths = torch.LongTensor([sl[1] for sl in sequence_and_length])
    return pad_sequences(vectorized_seqs, seq_lengths, countries)


def str2ascii_arr(msg):
    arr = [ord(c) for c in msg]
    return arr, len(arr)


def countries2tensor(countries):
    country_ids = [train_dataset.get_country_id(
        country) for country in countries]
    return torch.LongTensor(country_ids)


class RNNClassifier(nn.Module):
    # Our model

    def __init__(self, input_size, hidden_size, output_size, n_layers=1, bidirectional=True):
        super(RNNClassifier, self).__init__()
        self.hidden_size = hidden_size
        self.n_layers = n_layers
        self.n_directions = int(bidirectional) + 1

        self.embedding = nn.Embedding(input_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, n_layers,
                          bidirectional=bidirectional)
        self.fc = nn.Linear(hidden_size, output_size)

    def forward(self, input, seq_lengths):
        # Note: we run this all at once (over the whole input sequence)
        # input shape: B x S (input size)
        # transpose to make S(sequence) x B (batch)
        input = input.t()
        batch_size = input.size(1)

        # Make a hidden
        hidden = self._init_hidden(batch_size)

        # Embedding S x B -> S x B x I (embedding size)
        embedded = self.embedding(input)

        # Pack them up nicely
        gru_input = pack_padded_sequence(embedded, seq_lengths.data.cpu().numpy())

        # To compact weights again call flatten_parameters().
        self.gru.flatten_parameters()
        output, hidden = self.gru(gru_input, hidden)

        # Use the last layer output as FC's input
        # No need to unpack, since we are going to use hidden
        fc_output = self.fc(hidden[-1])
        return fc_output

    def _init_hidden(self, batch_size):
        hidden = torch.zeros(self.n_layers * self.n_directions,
                             batch_size, self.hidden_size)
        return hidden


# Train cycle
def train():
    total_loss = 0

    for i, (names, countries) in enumerate(train_loader, 1):
        input, seq_lengths, target = make_variables(names, countries)
        output = classifier(input, seq_lengths)

        loss = criterion(output, target)
        total_loss += loss.item()

        classifier.zero_grad()
        loss.backward()
        optimizer.step()

        if i % 10 == 0 and epoch % 10 == 0:
            print('[{}] Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.2f}'.format(
                time_since(start), epoch,  i *
                len(names), len(train_loader.dataset),
                100. * i * len(names) / len(train_loader.dataset),
                total_loss / i * len(names)))

    return total_loss


# Testing cycle
def test(name=None):
    classifier.eval()
    with torch.no_grad():
        # Predict for a given name
        if name:
            input, seq_lengths, target = make_variables([name], [])
            output = classifier(input, seq_lengths)
            pred = output.data.max(1, keepdim=True)[1]
            country_id = pred.cpu().numpy()[0][0]
            print(name, "is", train_dataset.get_country(country_id))
            classifier.train()
            return

        print("evaluating trained model ...")
        correct = 0
        test_loss = 0.0
        train_data_size = len(test_loader.dataset)

        for names, countries in test_loader:
            input, seq_lengths, target = make_variables(names, countries)
            output = classifier(input, seq_lengths)
            test_loss += criterion(output, target).item() * len(names)
            pred = output.data.max(1, keepdim=True)[1]
            correct += pred.eq(target.data.view_as(pred)).cpu().sum().item()
    classifier.train()

    print('\nTest set: Loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)\n'.format(
        test_loss / train_data_size, correct, train_data_size, 100. * correct / train_data_size))
    return test_loss / train_data_size, correct / train_data_size


if __name__ == '__main__':

    classifier = RNNClassifier(N_CHARS, HIDDEN_SIZE, N_COUNTRIES, N_LAYERS, bidirectional=False)

    optimizer = torch.optim.Adam(classifier.parameters(), lr=0.001)
    criterion = nn.CrossEntropyLoss()

    start = time.time()
    test_loss = test_acc = float('nan')
    print("Training for %d epochs..." % N_EPOCHS)
    for epoch in range(1, N_EPOCHS + 1):
        # Train cycle
        train_loss = train()

        # Testing
        if epoch % 10 == 0:
            test_loss, test_acc = test()

            # Testing several samples
            test("Ivanov")
            test("Yamamoto")
            test("Kimpark")

    majority = max(SHARES)
    print('final: train loss {:.4f}, test loss {:.4f}, test accuracy {:.3f} (majority share ~{:.2f})'.format(
        train_loss / len(train_loader), test_loss, test_acc, majority))
