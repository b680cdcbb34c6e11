"""Seq2seq GRU encoder-decoder with teacher forcing (PyTorch tutorial "NLP From Scratch:
Translation with a Sequence to Sequence Network"), on the addition of digit strings.

Upstream: https://github.com/pytorch/tutorials/blob/main/intermediate_source/seq2seq_translation_tutorial.py
Licence: BSD-3-Clause
Changes: pairs "a+b" -> "a+b's sum" (a, b < 100, generated, 4000 for training and 500
  held out) instead of the French-English sentence file; a character vocabulary with
  PAD=0 (Embedding padding_idx) and SOS/EOS after it instead of the Lang class; the
  plain DecoderRNN of the tutorial (not the attention decoder); the encoder packs its
  padded input (upstream reads the hidden state after the padding, a padding-not-masked
  bug, kept below as a variant); evaluation calls eval() on both modules (upstream keeps
  the encoder's dropout on, also kept as a variant); 8 epochs of 125 batches of 32
  (1000 Adam steps, lr 0.005 instead of 0.001); exact-match accuracy of greedy decoding.
Steps: 300

Bug: decoder-state-reset
Expect: no-recurrence
Allow: stuck-at-chance, prediction-collapse
Why: the decoder GRU gets a fresh zero state at every output step, so it neither remembers the encoder nor its own previous steps
- decoder_output, decoder_hidden = self.forward_step(decoder_input, decoder_hidden)
+ decoder_output, decoder_hidden = self.forward_step(decoder_input, torch.zeros_like(decoder_hidden))

Bug: unpacked-encoder
Expect: padding-not-masked
Why: as upstream: the padded batch goes into the encoder GRU whole, and its final state (read after up to 6 padding steps) is the decoder's only view of the input
- output, hidden = self.gru(packed)
+ output, hidden = self.gru(embedded)

Bug: eval-dropout
Expect: eval-in-train-mode
Why: as upstream: evaluation under no_grad without encoder.eval(), so the encoder's dropout is still active
- encoder.eval()
+ pass
"""
from __future__ import unicode_literals, print_function, division
import random
import time

import numpy as np
import torch
import torch.nn as nn
from torch import optim
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.data import TensorDataset, DataLoader, RandomSampler

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

random.seed(0)
np.random.seed(0)
torch.manual_seed(0)

######################################################################
# Loading data files (here: generated additions)
# ==================
#

PAD_token = 0
SOS_token = 1
EOS_token = 2
CHARS = "0123456789+"
char2index = {c: i + 3 for i, c in enumerate(CHARS)}
index2char = {i: c for c, i in char2index.items()}
n_chars = len(CHARS) + 3

MAX_LENGTH = 10


def make_pairs(n):
    pairs, seen = [], set()
    while len(pairs) < n:
        a, b = random.randint(0, 99), random.randint(0, 99)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        pairs.append(("%d+%d" % (a, b), "%d" % (a + b)))
    return pairs


all_pairs = make_pairs(4500)
train_pairs, test_pairs = all_pairs[:4000], all_pairs[4000:]


def indexesFromSentence(sentence):
    return [char2index[c] for c in sentence]


def tensorFromSentence(sentence):
    indexes = indexesFromSentence(sentence)
    indexes.append(EOS_token)
    return torch.tensor(indexes, dtype=torch.long, device=device).view(1, -1)


def get_dataloader(pairs, batch_size):
    n = len(pairs)
    input_ids = np.zeros((n, MAX_LENGTH), dtype=np.int32)
    target_ids = np.zeros((n, MAX_LENGTH), dtype=np.int32)
    input_lengths = np.zeros((n,), dtype=np.int64)

    for idx, (inp, tgt) in enumerate(pairs):
        inp_ids = indexesFromSentence(inp)
        tgt_ids = indexesFromSentence(tgt)
        inp_ids.append(EOS_token)
        tgt_ids.append(EOS_token)
        input_ids[idx, :len(inp_ids)] = inp_ids
        target_ids[idx, :len(tgt_ids)] = tgt_ids
        input_lengths[idx] = len(inp_ids)

    train_data = TensorDataset(torch.LongTensor(input_ids).to(device),
                               torch.LongTensor(target_ids).to(device),
                               torch.LongTensor(input_lengths))

    train_sampler = RandomSampler(train_data)
    train_dataloader = DataLoader(train_data, sampler=train_sampler, batch_size=batch_size)
    return train_dataloader

######################################################################
# The Encoder
# -----------


class EncoderRNN(nn.Module):
    def __init__(self, input_size, hidden_size, dropout_p=0.1):
        super(EncoderRNN, self).__init__()
        self.hidden_size = hidden_size

        self.embedding = nn.Embedding(input_size, hidden_size, padding_idx=PAD_token)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout_p)

    def forward(self, input, lengths):
        embedded = self.dropout(self.embedding(input))
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        output, hidden = self.gru(packed)
        return output, hidden

######################################################################
# The Decoder
# -----------


class DecoderRNN(nn.Module):
    def __init__(self, hidden_size, output_size):
        super(DecoderRNN, self).__init__()
        self.embedding = nn.Embedding(output_size, hidden_size)
        self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.out = nn.Linear(hidden_size, output_size)

    def forward(self, encoder_outputs, encoder_hidden, target_tensor=None):
        batch_size = encoder_hidden.size(1)
        decoder_input = torch.empty(batch_size, 1, dtype=torch.long, device=device).fill_(SOS_token)
        decoder_hidden = encoder_hidden
        decoder_outputs = []

        for i in range(MAX_LENGTH):
            decoder_output, decoder_hidden = self.forward_step(decoder_input, decoder_hidden)
            decoder_outputs.append(decoder_output)

            if target_tensor is not None:
                # Teacher forcing: Feed the target as the next input
                decoder_input = target_tensor[:, i].unsqueeze(1)  # Teacher forcing
            else:
                # Without teacher forcing: use its own predictions as the next input
                _, topi = decoder_output.topk(1)
                decoder_input = topi.squeeze(-1).detach()  # detach from history as input

        decoder_outputs = torch.cat(decoder_outputs, dim=1)
        decoder_outputs = F.log_softmax(decoder_outputs, dim=-1)
        return decoder_outputs, decoder_hidden, None  # We return `None` for consistency in the training loop

    def forward_step(self, input, hidden):
        output = self.embedding(input)
        output = F.relu(output)
        output, hidden = self.gru(output, hidden)
        output = self.out(output)
        return output, hidden

######################################################################
# Training the Model
# ------------------


def train_epoch(dataloader, encoder, decoder, encoder_optimizer,
                decoder_optimizer, criterion):

    total_loss = 0
    for data in dataloader:
        input_tensor, target_tensor, input_lengths = data

        encoder_optimizer.zero_grad()
        decoder_optimizer.zero_grad()

        encoder_outputs, encoder_hidden = encoder(input_tensor, input_lengths)
        decoder_outputs, _, _ = decoder(encoder_outputs, encoder_hidden, target_tensor)

        loss = criterion(
            decoder_outputs.view(-1, decoder_outputs.size(-1)),
            target_tensor.view(-1)
        )
        loss.backward()

        encoder_optimizer.step()
        decoder_optimizer.step()

        total_loss += loss.item()

    return total_loss / len(dataloader)


def asMinutes(s):
    m = int(s // 60)
    s -= m * 60
    return '%dm %ds' % (m, s)


def train(train_dataloader, encoder, decoder, n_epochs, learning_rate=0.005,
          print_every=100):
    start = time.time()
    print_loss_total = 0  # Reset every print_every

    encoder_optimizer = optim.Adam(encoder.parameters(), lr=learning_rate)
    decoder_optimizer = optim.Adam(decoder.parameters(), lr=learning_rate)
    criterion = nn.NLLLoss()

    for epoch in range(1, n_epochs + 1):
        loss = train_epoch(train_dataloader, encoder, decoder, encoder_optimizer, decoder_optimizer, criterion)
        print_loss_total += loss

        if epoch % print_every == 0:
            print_loss_avg = print_loss_total / print_every
            print_loss_total = 0
            print('%s (%d %d%%) loss %.4f  test exact match %.3f' % (
                asMinutes(time.time() - start), epoch, epoch / n_epochs * 100,
                print_loss_avg, evaluate_accuracy(encoder, decoder, test_pairs)))
    return loss

######################################################################
# Evaluation
# ==========


def evaluate(encoder, decoder, sentence):
    with torch.no_grad():
        input_tensor = tensorFromSentence(sentence)

        encoder_outputs, encoder_hidden = encoder(input_tensor, torch.tensor([input_tensor.size(1)]))
        decoder_outputs, decoder_hidden, decoder_attn = decoder(encoder_outputs, encoder_hidden)

        _, topi = decoder_outputs.topk(1)
        decoded_ids = topi.squeeze()

        decoded_words = []
        for idx in decoded_ids:
            if idx.item() == EOS_token:
                break
            decoded_words.append(index2char.get(idx.item(), '?'))
    return ''.join(decoded_words), decoder_attn


def eval_mode(encoder, decoder):
    encoder.eval()
    decoder.eval()


def evaluate_accuracy(encoder, decoder, pairs):
    eval_mode(encoder, decoder)
    right = sum(evaluate(encoder, decoder, p[0])[0] == p[1] for p in pairs)
    encoder.train()
    decoder.train()
    return right / len(pairs)


def evaluateRandomly(encoder, decoder, n=5):
    eval_mode(encoder, decoder)
    for i in range(n):
        pair = random.choice(test_pairs)
        print('>', pair[0], '=', pair[1], '<', evaluate(encoder, decoder, pair[0])[0])
    encoder.train()
    decoder.train()

######################################################################
# Training and Evaluating
# =======================


hidden_size = 128
batch_size = 32

train_dataloader = get_dataloader(train_pairs, batch_size)

encoder = EncoderRNN(n_chars, hidden_size).to(device)
decoder = DecoderRNN(hidden_size, n_chars).to(device)

loss = train(train_dataloader, encoder, decoder, 8, print_every=2)
evaluateRandomly(encoder, decoder)
print('final: train loss %.4f  test exact match %.3f' % (loss, evaluate_accuracy(encoder, decoder, test_pairs)))
