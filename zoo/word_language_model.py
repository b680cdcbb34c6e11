"""Word-level LSTM language model (truncated BPTT, repackage_hidden, clip_grad_norm_).

Upstream: https://github.com/pytorch/examples/tree/main/word_language_model
Licence: BSD-3-Clause
Changes: main.py, model.py (RNNModel only; no Transformer) and data.py in one file;
  the corpus is generated (a 2000-word Markov chain over syllable words, one sentence
  a line, train/valid/test drawn from the same chain) instead of reading wikitext-2,
  and data.Corpus tokenizes those lines instead of files; emsize/nhid 48, bptt 20,
  3 epochs of 475 batches (batch 20), log interval 100; the best model is kept in memory
  (a state_dict copy) instead of model.pt; no --accel, --onnx-export, --dry-run;
  math.exp(min(loss, 700)) in the log lines (a diverged loss would stop the run with
  OverflowError instead of printing); the train-loop repackage line carries a comment
  (so that the patch below names it, not evaluate()'s); a final line with test loss,
  perplexity and next-word accuracy.
  Steps 500: an epoch is 475 steps, so one evaluate() runs within the diagnosed steps.
Steps: 500
Allow: label-imbalance

Bug: no-repackage
Expect: undetached-state
Why: the state is fed into the next batch without repackage_hidden; current torch stops at the second backward with "Trying to backward through the graph a second time"
- hidden = repackage_hidden(hidden)  # detach from the previous batch
+ hidden = hidden

Bug: eval-without-model-eval
Expect: eval-in-train-mode
Why: evaluate() forgets model.eval(), so validation and test run with dropout active (read worse, and the lr annealing reacts to noise)
- model.eval()
+ # model.eval()

Bug: no-clip
Expect: exploding-gradients
Allow: learning-rate-scale
Why: clip_grad_norm_ removed at upstream's lr=20: early gradient spikes (25-40x the median) throw the loss back from 7.5 to 25 and training never recovers (test ppl ~300 instead of ~27)
- torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
+ # torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)

Bug: no-clip-high-lr
Expect: divergence
Allow: exploding-gradients, learning-rate-scale, non-finite, stuck-at-chance
Why: clipping removed and the learning rate raised tenfold: the first updates throw the decoder out and the training loss climbs from 7.6 to ~1000 (the gradient norm itself stays ~4: log_softmax bounds it)
- parser.add_argument('--lr', type=float, default=20,
+ parser.add_argument('--lr', type=float, default=200,
- torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
+ # torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
"""
# coding: utf-8
import argparse
import time
import math
import copy
import random
import torch
import torch.nn as nn
import torch.nn.functional as F

parser = argparse.ArgumentParser(description='PyTorch Wikitext-2 RNN/LSTM/GRU Language Model')
parser.add_argument('--model', type=str, default='LSTM',
                    help='type of network (RNN_TANH, RNN_RELU, LSTM, GRU)')
parser.add_argument('--emsize', type=int, default=48,
                    help='size of word embeddings')
parser.add_argument('--nhid', type=int, default=48,
                    help='number of hidden units per layer')
parser.add_argument('--nlayers', type=int, default=2,
                    help='number of layers')
parser.add_argument('--lr', type=float, default=20,
                    help='initial learning rate')
parser.add_argument('--clip', type=float, default=0.25,
                    help='gradient clipping')
parser.add_argument('--epochs', type=int, default=3,
                    help='upper epoch limit')
parser.add_argument('--batch_size', type=int, default=20, metavar='N',
                    help='batch size')
parser.add_argument('--bptt', type=int, default=20,
                    help='sequence length')
parser.add_argument('--dropout', type=float, default=0.2,
                    help='dropout applied to layers (0 = no dropout)')
parser.add_argument('--tied', action='store_true',
                    help='tie the word embedding and softmax weights')
parser.add_argument('--seed', type=int, default=1111,
                    help='random seed')
parser.add_argument('--log-interval', type=int, default=100, metavar='N',
                    help='report interval')
args = parser.parse_args()

# Set the random seed manually for reproducibility.
torch.manual_seed(args.seed)
random.seed(args.seed)

device = torch.device("cpu")

print("Using device:", device)

###############################################################################
# data.py
###############################################################################

class Dictionary(object):
    def __init__(self):
        self.word2idx = {}
        self.idx2word = []

    def add_word(self, word):
        if word not in self.word2idx:
            self.idx2word.append(word)
            self.word2idx[word] = len(self.idx2word) - 1
        return self.word2idx[word]

    def __len__(self):
        return len(self.idx2word)


class Corpus(object):
    def __init__(self, lines):
        self.dictionary = Dictionary()
        self.train = self.tokenize(lines['train'])
        self.valid = self.tokenize(lines['valid'])
        self.test = self.tokenize(lines['test'])

    def tokenize(self, lines):
        """Tokenizes a list of text lines."""
        # Add words to the dictionary
        for line in lines:
            words = line.split() + ['<eos>']
            for word in words:
                self.dictionary.add_word(word)

        # Tokenize file content
        idss = []
        for line in lines:
            words = line.split() + ['<eos>']
            ids = []
            for word in words:
                ids.append(self.dictionary.word2idx[word])
            idss.append(torch.tensor(ids).type(torch.int64))
        ids = torch.cat(idss)

        return ids


def make_lines(n_tokens, rng, words, successors, starters):
    """Sentences from a sparse Markov chain over the words: each word has 4 likely successors."""
    lines, total = [], 0
    while total < n_tokens:
        w = rng.choice(starters)
        sentence = [w]
        while len(sentence) < 4 or rng.random() > 0.12:
            w = rng.choices(successors[w], weights=(0.55, 0.25, 0.12, 0.08))[0]
            sentence.append(w)
        lines.append(' '.join(sentence))
        total += len(sentence) + 1
    return lines


syllables = ['ka', 'lo', 'mi', 'ne', 'ru', 'ta', 'po', 'si', 'de', 'fu', 'ga', 'hi', 'jo', 'ke', 'lu',
             'ma', 'no', 'pe', 'ri', 'so', 'tu', 'va', 'we', 'xi', 'yo', 'za', 'be', 'ci', 'do', 'fa',
             'gu', 'he', 'ji', 'ko', 'la', 'me', 'ni', 'pu', 'ro', 'se', 'ti', 'vo', 'wa', 'ye', 'zu']
grammar_rng = random.Random(args.seed)
all_words = [a + b for a in syllables for b in syllables][:1999]
successors = {w: grammar_rng.sample(all_words, 4) for w in all_words}
starters = grammar_rng.sample(all_words, 40)
corpus = Corpus({'train': make_lines(190000, grammar_rng, all_words, successors, starters),
                 'valid': make_lines(20000, grammar_rng, all_words, successors, starters),
                 'test': make_lines(20000, grammar_rng, all_words, successors, starters)})

# Starting from sequential data, batchify arranges the dataset into columns.
# For instance, with the alphabet as the sequence and batch size 4, we'd get
# ┌ a g m s ┐
# │ b h n t │
# │ c i o u │
# │ d j p v │
# │ e k q w │
# └ f l r x ┘.
# These columns are treated as independent by the model, which means that the
# dependence of e. g. 'g' on 'f' can not be learned, but allows more efficient
# batch processing.

def batchify(data, bsz):
    # Work out how cleanly we can divide the dataset into bsz parts.
    nbatch = data.size(0) // bsz
    # Trim off any extra elements that wouldn't cleanly fit (remainders).
    data = data.narrow(0, 0, nbatch * bsz)
    # Evenly divide the data across the bsz batches.
    data = data.view(bsz, -1).t().contiguous()
    return data.to(device)

eval_batch_size = 10
train_data = batchify(corpus.train, args.batch_size)
val_data = batchify(corpus.valid, eval_batch_size)
test_data = batchify(corpus.test, eval_batch_size)

###############################################################################
# model.py
###############################################################################

class RNNModel(nn.Module):
    """Container module with an encoder, a recurrent module, and a decoder."""

    def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
        super(RNNModel, self).__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        if rnn_type in ['LSTM', 'GRU']:
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        else:
            try:
                nonlinearity = {'RNN_TANH': 'tanh', 'RNN_RELU': 'relu'}[rnn_type]
            except KeyError as e:
                raise ValueError( """An invalid option for `--model` was supplied,
                                 options are ['LSTM', 'GRU', 'RNN_TANH' or 'RNN_RELU']""") from e
            self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)

        # Optionally tie weights as in:
        # "Using the Output Embedding to Improve Language Models" (Press & Wolf 2016)
        # https://arxiv.org/abs/1608.05859
        # and
        # "Tying Word Vectors and Word Classifiers: A Loss Framework for Language Modeling" (Inan et al. 2016)
        # https://arxiv.org/abs/1611.01462
        if tie_weights:
            if nhid != ninp:
                raise ValueError('When using the tied flag, nhid must be equal to emsize')
            self.decoder.weight = self.encoder.weight

        self.init_weights()

        self.rnn_type = rnn_type
        self.nhid = nhid
        self.nlayers = nlayers

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        if self.rnn_type == 'LSTM':
            return (weight.new_zeros(self.nlayers, bsz, self.nhid),
                    weight.new_zeros(self.nlayers, bsz, self.nhid))
        else:
            return weight.new_zeros(self.nlayers, bsz, self.nhid)

###############################################################################
# Build the model
###############################################################################

ntokens = len(corpus.dictionary)
model = RNNModel(args.model, ntokens, args.emsize, args.nhid, args.nlayers, args.dropout, args.tied).to(device)

criterion = nn.NLLLoss()

###############################################################################
# Training code
###############################################################################

def repackage_hidden(h):
    """Wraps hidden states in new Tensors, to detach them from their history."""

    if isinstance(h, torch.Tensor):
        return h.detach()
    else:
        return tuple(repackage_hidden(v) for v in h)


# get_batch subdivides the source data into chunks of length args.bptt.
# If source is equal to the example output of the batchify function, with
# a bptt-limit of 2, we'd get the following two Variables for i = 0:
# ┌ a g m s ┐ ┌ b h n t ┐
# └ b h n t ┘ └ c i o u ┘
# Note that despite the name of the function, the subdivison of data is not
# done along the batch dimension (i.e. dimension 1), since that was handled
# by the batchify function. The chunks are along dimension 0, corresponding
# to the seq_len dimension in the LSTM.

def get_batch(source, i):
    seq_len = min(args.bptt, len(source) - 1 - i)
    data = source[i:i+seq_len]
    target = source[i+1:i+1+seq_len].view(-1)
    return data, target


def evaluate(data_source):
    # Turn on evaluation mode which disables dropout.
    model.eval()
    total_loss = 0.
    total_correct = 0
    ntokens = len(corpus.dictionary)
    hidden = model.init_hidden(eval_batch_size)
    with torch.no_grad():
        for i in range(0, data_source.size(0) - 1, args.bptt):
            data, targets = get_batch(data_source, i)
            output, hidden = model(data, hidden)
            hidden = repackage_hidden(hidden)
            total_loss += len(data) * criterion(output, targets).item()
            total_correct += (output.argmax(1) == targets).sum().item()
    evaluate.accuracy = total_correct / ((len(data_source) - 1) * eval_batch_size)
    return total_loss / (len(data_source) - 1)


def train():
    # Turn on training mode which enables dropout.
    model.train()
    total_loss = 0.
    start_time = time.time()
    ntokens = len(corpus.dictionary)
    hidden = model.init_hidden(args.batch_size)
    for batch, i in enumerate(range(0, train_data.size(0) - 1, args.bptt)):
        data, targets = get_batch(train_data, i)
        # Starting each batch, we detach the hidden state from how it was previously produced.
        # If we didn't, the model would try backpropagating all the way to start of the dataset.
        model.zero_grad()
        hidden = repackage_hidden(hidden)  # detach from the previous batch
        output, hidden = model(data, hidden)
        loss = criterion(output, targets)
        loss.backward()

        # `clip_grad_norm` helps prevent the exploding gradient problem in RNNs / LSTMs.
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)

        total_loss += loss.item()

        if batch % args.log_interval == 0 and batch > 0:
            cur_loss = total_loss / args.log_interval
            elapsed = time.time() - start_time
            print('| epoch {:3d} | {:5d}/{:5d} batches | lr {:02.2f} | ms/batch {:5.2f} | '
                    'loss {:5.2f} | ppl {:8.2f}'.format(
                epoch, batch, len(train_data) // args.bptt, lr,
                elapsed * 1000 / args.log_interval, cur_loss, math.exp(min(cur_loss, 700))))
            total_loss = 0
            start_time = time.time()


# Loop over epochs.
lr = args.lr
best_val_loss = None
best_state = None

# At any point you can hit Ctrl + C to break out of training early.
try:
    for epoch in range(1, args.epochs+1):
        epoch_start_time = time.time()
        train()
        val_loss = evaluate(val_data)
        print('-' * 89)
        print('| end of epoch {:3d} | time: {:5.2f}s | valid loss {:5.2f} | '
                'valid ppl {:8.2f}'.format(epoch, (time.time() - epoch_start_time),
                                           val_loss, math.exp(min(val_loss, 700))))
        print('-' * 89)
        # Save the model if the validation loss is the best we've seen so far.
        if not best_val_loss or val_loss < best_val_loss:
            best_state = copy.deepcopy(model.state_dict())
            best_val_loss = val_loss
        else:
            # Anneal the learning rate if no improvement has been seen in the validation dataset.
            lr /= 4.0
except KeyboardInterrupt:
    print('-' * 89)
    print('Exiting from training early')

# Load the best saved model.
model.load_state_dict(best_state)
# after load the rnn params are not a continuous chunk of memory
# this makes them a continuous chunk, and will speed up forward pass
model.rnn.flatten_parameters()

# Run on test data.
test_loss = evaluate(test_data)
print('=' * 89)
print('| End of training | test loss {:5.2f} | test ppl {:8.2f} | test accuracy {:.3f}'.format(
    test_loss, math.exp(min(test_loss, 700)), evaluate.accuracy))
print('=' * 89)
