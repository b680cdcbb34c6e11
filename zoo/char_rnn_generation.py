#!/usr/bin/env python
"""Character-level GRU text generator (char-rnn), trained char by char, sampling as it goes.

Upstream: https://github.com/spro/char-rnn.pytorch
Licence: MIT
Changes: helpers.py, model.py, generate.py and train.py in one file; the text is generated
  (sentences from a small toy grammar, ~60 000 characters) instead of reading a file,
  so no unidecode and no filename argument; no tqdm, no --cuda, no save() of a .pt file;
  chunk_len 16 and batch_size 32 instead of 200 and 100, 1000 epochs instead of 2000;
  loss.data[0] -> loss.item() (a 0-dim tensor cannot be indexed in current torch);
  random_training_set draws start_index up to file_len - chunk_len - 1 (upstream's bound
  could return a chunk one character short);
  a final line with the loss and next-character accuracy on a held-out text
  (evaluate(), under no_grad).
Steps: 300
Allow: label-imbalance

Bug: hidden-reset-per-char
Expect: no-recurrence
Allow: dead-parameters
Why: the hidden state is re-initialised for every character, so the GRU only ever sees one character with a zero state and learns a bigram table (train loss ~1.7 instead of ~0.45); weight_hh multiplies a zero state and gets an all-zero gradient
- output, hidden = decoder(inp[:,c], hidden)
+ output, hidden = decoder(inp[:,c], decoder.init_hidden(args.batch_size))

Bug: lr-1e-6
Expect: learning-rate-scale
Allow: stuck-at-chance, prediction-collapse, poor-initial-loss
Why: Adam at 1e-6 moves each weight by about 1e-6 per step: after 1000 steps the loss is still 4.54, ln(100) = 4.61
- argparser.add_argument('--learning_rate', type=float, default=0.01)
+ argparser.add_argument('--learning_rate', type=float, default=1e-6)

Bug: decoder-bypassed
Expect: dead-parameters
Why: the decoder Linear is built but forward returns the GRU output directly (hidden_size = n_characters = 100, so the shapes still fit); the decoder never gets a gradient and the logits are stuck in [-1, 1] (held-out loss 2.73 instead of 0.35)
- output = self.decoder(output.view(batch_size, -1))
+ output = output.view(batch_size, -1)

Bug: softmax-before-ce
Expect: loss-output-mismatch
Why: forward returns probabilities (softmax of the decoder output) to nn.CrossEntropyLoss, which applies its own log-softmax: the gradient is flattened and the loss cannot fall below ln(99 + e) - 1 = 3.62 (it ends at 4.07)
- output = self.decoder(output.view(batch_size, -1))
+ output = torch.softmax(self.decoder(output.view(batch_size, -1)), dim=1)
"""
# https://github.com/spro/char-rnn.pytorch

import torch
import torch.nn as nn
from torch.autograd import Variable
import argparse
import os

# helpers.py
import string
import random
import time
import math

# Reading and un-unicode-encoding data

all_characters = string.printable
n_characters = len(all_characters)

def read_file(seed, n_chars):
    """The text: sentences of a toy grammar, one to three a line."""
    rng = random.Random(seed)
    names = ['Romeo', 'Juliet', 'the king', 'the queen', 'my lord', 'the nurse', 'a friar', 'the prince']
    verbs = ['loves', 'sees', 'follows', 'fears', 'calls', 'remembers', 'forgives', 'betrays', 'answers']
    adverbs = ['tonight', 'in the garden', 'at the gate', 'with a sword', 'once more', 'in silence']
    lines = []
    total = 0
    while total < n_chars:
        line = []
        for _ in range(rng.randint(1, 3)):
            who, whom = rng.sample(names, 2)
            s = '%s %s %s' % (who, rng.choice(verbs), whom)
            if rng.random() < 0.5:
                s += ' ' + rng.choice(adverbs)
            line.append(s[0].upper() + s[1:] + rng.choice(['.', '.', '.', '!', '?']))
        lines.append(' '.join(line))
        total += len(lines[-1]) + 1
    file = '\n'.join(lines) + '\n'
    return file, len(file)

# Turning a string into a tensor

def char_tensor(string):
    tensor = torch.zeros(len(string)).long()
    for c in range(len(string)):
        try:
            tensor[c] = all_characters.index(string[c])
        except:
            continue
    return tensor

# Readable time elapsed

def time_since(since):
    s = time.time() - since
    m = math.floor(s / 60)
    s -= m * 60
    return '%dm %ds' % (m, s)

# model.py

class CharRNN(nn.Module):
    def __init__(self, input_size, hidden_size, output_size, model="gru", n_layers=1):
        super(CharRNN, self).__init__()
        self.model = model.lower()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.n_layers = n_layers

        self.encoder = nn.Embedding(input_size, hidden_size)
        if self.model == "gru":
            self.rnn = nn.GRU(hidden_size, hidden_size, n_layers)
        elif self.model == "lstm":
            self.rnn = nn.LSTM(hidden_size, hidden_size, n_layers)
        self.decoder = nn.Linear(hidden_size, output_size)

    def forward(self, input, hidden):
        batch_size = input.size(0)
        encoded = self.encoder(input)
        output, hidden = self.rnn(encoded.view(1, batch_size, -1), hidden)
        output = self.decoder(output.view(batch_size, -1))
        return output, hidden

    def forward2(self, input, hidden):
        encoded = self.encoder(input.view(1, -1))
        output, hidden = self.rnn(encoded.view(1, 1, -1), hidden)
        output = self.decoder(output.view(1, -1))
        return output, hidden

    def init_hidden(self, batch_size):
        if self.model == "lstm":
            return (Variable(torch.zeros(self.n_layers, batch_size, self.hidden_size)),
                    Variable(torch.zeros(self.n_layers, batch_size, self.hidden_size)))
        return Variable(torch.zeros(self.n_layers, batch_size, self.hidden_size))

# generate.py

def generate(decoder, prime_str='A', predict_len=100, temperature=0.8, cuda=False):
    hidden = decoder.init_hidden(1)
    prime_input = Variable(char_tensor(prime_str).unsqueeze(0))

    predicted = prime_str

    # Use priming string to "build up" hidden state
    for p in range(len(prime_str) - 1):
        _, hidden = decoder(prime_input[:,p], hidden)

    inp = prime_input[:,-1]

    for p in range(predict_len):
        output, hidden = decoder(inp, hidden)

        # Sample from the network as a multinomial distribution
        output_dist = output.data.view(-1).div(temperature).exp()
        top_i = torch.multinomial(output_dist, 1)[0]

        # Add predicted character to string and use as next input
        predicted_char = all_characters[top_i]
        predicted += predicted_char
        inp = Variable(char_tensor(predicted_char).unsqueeze(0))

    return predicted

# train.py

# Parse command line arguments
argparser = argparse.ArgumentParser()
argparser.add_argument('--model', type=str, default="gru")
argparser.add_argument('--n_epochs', type=int, default=1000)
argparser.add_argument('--print_every', type=int, default=100)
argparser.add_argument('--hidden_size', type=int, default=100)
argparser.add_argument('--n_layers', type=int, default=2)
argparser.add_argument('--learning_rate', type=float, default=0.01)
argparser.add_argument('--chunk_len', type=int, default=16)
argparser.add_argument('--batch_size', type=int, default=32)
argparser.add_argument('--shuffle', action='store_true')
args = argparser.parse_args()

random.seed(1)
torch.manual_seed(1)

file, file_len = read_file(seed=1, n_chars=60000)
held_out, held_out_len = read_file(seed=2, n_chars=6000)

def random_training_set(chunk_len, batch_size, file=file, file_len=file_len):
    inp = torch.LongTensor(batch_size, chunk_len)
    target = torch.LongTensor(batch_size, chunk_len)
    for bi in range(batch_size):
        start_index = random.randint(0, file_len - chunk_len - 1)
        end_index = start_index + chunk_len + 1
        chunk = file[start_index:end_index]
        inp[bi] = char_tensor(chunk[:-1])
        target[bi] = char_tensor(chunk[1:])
    inp = Variable(inp)
    target = Variable(target)
    return inp, target

def train(inp, target):
    hidden = decoder.init_hidden(args.batch_size)
    decoder.zero_grad()
    loss = 0

    for c in range(args.chunk_len):
        output, hidden = decoder(inp[:,c], hidden)
        loss += criterion(output.view(args.batch_size, -1), target[:,c])

    loss.backward()
    decoder_optimizer.step()

    return loss.item() / args.chunk_len

def evaluate(inp, target):
    decoder.eval()
    hidden = decoder.init_hidden(inp.size(0))
    loss, correct = 0, 0
    with torch.no_grad():
        for c in range(inp.size(1)):
            out, hidden = decoder(inp[:, c], hidden)
            loss += nn.functional.cross_entropy(out, target[:, c]).item()
            correct += (out.argmax(1) == target[:, c]).sum().item()
    decoder.train()
    return loss / inp.size(1), correct / target.numel()

# Initialize models and start training

decoder = CharRNN(
    n_characters,
    args.hidden_size,
    n_characters,
    model=args.model,
    n_layers=args.n_layers,
)
decoder_optimizer = torch.optim.Adam(decoder.parameters(), lr=args.learning_rate)
criterion = nn.CrossEntropyLoss()

start = time.time()
all_losses = []
loss_avg = 0

try:
    print("Training for %d epochs..." % args.n_epochs)
    for epoch in range(1, args.n_epochs + 1):
        loss = train(*random_training_set(args.chunk_len, args.batch_size))
        loss_avg += loss

        if epoch % args.print_every == 0:
            print('[%s (%d %d%%) %.4f]' % (time_since(start), epoch, epoch / args.n_epochs * 100, loss))
            print(generate(decoder, 'Wh', 100), '\n')

except KeyboardInterrupt:
    print("Stopped early")

test_loss, test_acc = evaluate(*random_training_set(100, 64, held_out, held_out_len))
print('final: train loss %.4f | held-out loss %.4f | held-out char accuracy %.3f' % (loss, test_loss, test_acc))
