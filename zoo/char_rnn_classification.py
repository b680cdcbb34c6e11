"""Char-RNN classification (names -> language), hand-written RNN cell, one name at a time.

Upstream: https://github.com/spro/practical-pytorch/blob/master/char-rnn-classification/
Licence: MIT
Changes: data.py, model.py and train.py in one file; names generated per language from
  per-language syllable sets (8 languages, list sizes skewed like data/names/*.txt, Russian
  largest) instead of read from data/names/*.txt; Variable and loss.data[0] replaced by
  tensors and loss.item(); LogSoftmax(dim=1); 10000 iterations instead of 100000, printing
  every 1000; a final evaluation (as the notebook's confusion-matrix section) on held-out
  names, under no_grad, instead of on training pairs. The category is drawn uniformly as
  upstream's randomTrainingPair does, so the labels seen in training are balanced.
  The generated lists hold about a thousand names (upstream: 20k), so the 3000 draws of a
  run repeat names: duplicate-samples is true of this port's data and is allowed.
Steps: 3000
Allow: duplicate-samples

Bug: softmax-into-nll
Expect: loss-output-mismatch
Allow: stuck-at-chance, prediction-collapse
Why: the model ends in Softmax, so NLLLoss gets probabilities instead of log-probabilities
- self.softmax = nn.LogSoftmax(dim=1)
+ self.softmax = nn.Softmax(dim=1)

Bug: random-category-tensor
Expect: inconsistent-labels
Allow: stuck-at-chance, prediction-collapse
Why: the label tensor is built from a second random draw, not from the name's own category
- category_tensor = torch.tensor([all_categories.index(category)], dtype=torch.long)
+ category_tensor = torch.tensor([all_categories.index(randomChoice(all_categories))], dtype=torch.long)

Bug: one-hot-typo
Expect: constant-input
Allow: stuck-at-chance, prediction-collapse
Why: '==' instead of '=' in lineToTensor: every letter tensor stays all zeros
- tensor[li][0][letterToIndex(letter)] = 1
+ tensor[li][0][letterToIndex(letter)] == 1

Bug: evaluate-on-training-names
Expect: duplicate-samples
Why: the final evaluation draws training names (as the upstream notebook does), so it measures memory
- line = randomChoice(test_lines[category])
+ line = randomChoice(category_lines[category])
"""

import math
import random
import string
import time

import torch
import torch.nn as nn

random.seed(0)
torch.manual_seed(0)

# ---------------------------------------------------------------- data.py

all_letters = string.ascii_letters + " .,;'-"
n_letters = len(all_letters)

# Per-language syllables; sizes of the name lists skewed like data/names/*.txt.
SYLLABLES = {
    "Russian": (["vla", "dim", "ser", "gei", "iva", "nov", "kov", "sky", "pet", "rov", "mik", "hai",
                 "lov", "zin", "bor", "tsev", "ush", "ko"], 900),
    "English": (["ham", "ton", "wood", "ley", "wor", "th", "ing", "ford", "ash", "bur", "son",
                 "field", "ster", "cliff", "ell"], 360),
    "Arabic": (["ab", "dul", "rah", "man", "ha", "sa", "kha", "lid", "na", "sir", "gha", "zal",
                "fa", "rid", "sha"], 200),
    "Japanese": (["ya", "ma", "mo", "to", "ka", "shi", "ta", "na", "ki", "mu", "ra", "su", "zu",
                  "hi", "ro", "no"], 99),
    "Italian": (["ros", "si", "bel", "li", "ni", "gio", "van", "ric", "ci", "ar", "del", "lo",
                 "maz", "za", "tti"], 70),
    "German": (["schm", "idt", "mu", "ller", "berg", "hof", "stein", "mann", "wald", "ner",
                "bach", "kr", "auss", "feld"], 72),
    "Chinese": (["zh", "ang", "li", "wang", "chen", "liu", "yang", "huang", "zhao", "wu", "zhou",
                 "xu", "sun", "hu", "guo"], 27),
    "Vietnamese": (["ng", "uy", "en", "tr", "an", "le", "pha", "m", "vu", "hoa", "ng", "do",
                    "bui", "dang", "duong"], 22),
}


def _make_name(sylls, rng):
    n = rng.choice([2, 2, 3, 3, 4])
    return "".join(rng.choice(sylls) for _ in range(n)).capitalize()


# Build the category_lines dictionary, a list of lines per category
category_lines = {}
test_lines = {}
all_categories = []
_rng = random.Random(1)
for category, (sylls, count) in SYLLABLES.items():
    all_categories.append(category)
    names = []
    while len(names) < count + count // 4 + 4:
        name = _make_name(sylls, _rng)
        if name not in names:
            names.append(name)
    cut = len(names) * 4 // 5
    category_lines[category] = names[:cut]
    test_lines[category] = names[cut:]

n_categories = len(all_categories)


# Find letter index from all_letters, e.g. "a" = 0
def letterToIndex(letter):
    return all_letters.find(letter)


# Turn a line into a <line_length x 1 x n_letters>,
# or an array of one-hot letter vectors
def lineToTensor(line):
    tensor = torch.zeros(len(line), 1, n_letters)
    for li, letter in enumerate(line):
        tensor[li][0][letterToIndex(letter)] = 1
    return tensor


# ---------------------------------------------------------------- model.py

class RNN(nn.Module):
    def __init__(self, input_size, hidden_size, output_size):
        super(RNN, self).__init__()

        self.hidden_size = hidden_size

        self.i2h = nn.Linear(input_size + hidden_size, hidden_size)
        self.i2o = nn.Linear(input_size + hidden_size, output_size)
        self.softmax = nn.LogSoftmax(dim=1)

    def forward(self, input, hidden):
        combined = torch.cat((input, hidden), 1)
        hidden = self.i2h(combined)
        output = self.i2o(combined)
        output = self.softmax(output)
        return output, hidden

    def initHidden(self):
        return torch.zeros(1, self.hidden_size)


# ---------------------------------------------------------------- train.py

n_hidden = 128
n_epochs = 10000
print_every = 1000
plot_every = 100
learning_rate = 0.005  # If you set this too high, it might explode. If too low, it might not learn


def categoryFromOutput(output):
    top_n, top_i = output.data.topk(1)  # Tensor out of Variable with .data
    category_i = top_i[0][0].item()
    return all_categories[category_i], category_i


def randomChoice(l):
    return l[random.randint(0, len(l) - 1)]


def randomTrainingPair():
    category = randomChoice(all_categories)
    line = randomChoice(category_lines[category])
    category_tensor = torch.tensor([all_categories.index(category)], dtype=torch.long)
    line_tensor = lineToTensor(line)
    return category, line, category_tensor, line_tensor


rnn = RNN(n_letters, n_hidden, n_categories)
optimizer = torch.optim.SGD(rnn.parameters(), lr=learning_rate)
criterion = nn.NLLLoss()


def train(category_tensor, line_tensor):
    hidden = rnn.initHidden()
    optimizer.zero_grad()

    for i in range(line_tensor.size()[0]):
        output, hidden = rnn(line_tensor[i], hidden)

    loss = criterion(output, category_tensor)
    loss.backward()

    optimizer.step()

    return output, loss.item()


# Keep track of losses for plotting
current_loss = 0
all_losses = []


def timeSince(since):
    now = time.time()
    s = now - since
    m = math.floor(s / 60)
    s -= m * 60
    return '%dm %ds' % (m, s)


start = time.time()

for epoch in range(1, n_epochs + 1):
    category, line, category_tensor, line_tensor = randomTrainingPair()
    output, loss = train(category_tensor, line_tensor)
    current_loss += loss

    # Print epoch number, loss, name and guess
    if epoch % print_every == 0:
        guess, guess_i = categoryFromOutput(output)
        correct = '✓' if guess == category else '✗ (%s)' % category
        print('%d %d%% (%s) %.4f (avg %.4f) %s / %s %s' % (
            epoch, epoch / n_epochs * 100, timeSince(start), loss, current_loss / plot_every, line, guess,
            correct))

    # Add current loss avg to list of losses
    if epoch % plot_every == 0:
        all_losses.append(current_loss / plot_every)
        current_loss = 0


# Just return an output given a line
def evaluate(line_tensor):
    hidden = rnn.initHidden()

    for i in range(line_tensor.size()[0]):
        output, hidden = rnn(line_tensor[i], hidden)

    return output


# Go through a bunch of examples and record which are correctly guessed
n_confusion = 1000
correct_n = 0
eval_loss = 0.0
with torch.no_grad():
    for i in range(n_confusion):
        category = randomChoice(all_categories)
        line = randomChoice(test_lines[category])
        category_i = all_categories.index(category)
        output = evaluate(lineToTensor(line))
        guess, guess_i = categoryFromOutput(output)
        eval_loss += criterion(output, torch.tensor([category_i])).item()
        correct_n += int(guess_i == category_i)

print('final: train loss %.4f (last 1000), held-out loss %.4f, held-out accuracy %.3f (chance %.3f)' % (
    sum(all_losses[-10:]) / 10, eval_loss / n_confusion, correct_n / n_confusion, 1.0 / n_categories))
