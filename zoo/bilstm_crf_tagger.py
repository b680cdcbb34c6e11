"""BiLSTM-CRF tagger (PyTorch tutorial "Advanced: Making Dynamic Decisions and the Bi-LSTM CRF").

Upstream: https://github.com/pytorch/tutorials/blob/main/beginner_source/nlp/advanced_tutorial.py
Licence: BSD-3-Clause
Changes: 40 generated NER-like sentences (entities tagged B/I, fillers O, some words
  ambiguous between B, I and O) instead of the two hand-written ones, and 30 held-out
  sentences for a Viterbi tag accuracy; 25 epochs of one sentence per step (1000 SGD
  steps) instead of 300 epochs of 2; EMBEDDING_DIM/HIDDEN_DIM 16 instead of 5/4;
  the forward algorithm's loop over next tags done in one operation, as the tutorial
  suggests (the per-tag loop took ~10x longer); Variable/to_scalar replaced by tensors
  and .item() as in the tutorial's current text.
Steps: 300

Bug: emissions-detached
Expect: dead-parameters
Why: the LSTM output is detached before the tag projection, so the embeddings and the BiLSTM never learn
- lstm_feats = self.hidden2tag(lstm_out)
+ lstm_feats = self.hidden2tag(lstm_out.detach())

Bug: lr-too-small
Expect: learning-rate-scale
Allow: stuck-at-chance, prediction-collapse
Why: lr 1e-5 instead of 1e-2: SGD steps move the weights by ~1e-6 of their norm
- optimizer = optim.SGD(model.parameters(), lr=0.01, weight_decay=1e-4)
+ optimizer = optim.SGD(model.parameters(), lr=1e-5, weight_decay=1e-4)

Bug: lr-too-large
Expect: learning-rate-scale
Allow: exploding-gradients, divergence, non-finite, stuck-at-chance, prediction-collapse
Why: lr 2.0 on the summed (per-sentence) negative log-likelihood: each step rewrites the weights
- optimizer = optim.SGD(model.parameters(), lr=0.01, weight_decay=1e-4)
+ optimizer = optim.SGD(model.parameters(), lr=2.0, weight_decay=1e-4)
"""
# Author: Robert Guthrie
import random

import torch
import torch.nn as nn
import torch.optim as optim

torch.manual_seed(1)
random.seed(1)

#####################################################################
# Helper functions to make the code more readable.


def argmax(vec):
    # return the argmax as a python int
    _, idx = torch.max(vec, 1)
    return idx.item()


def prepare_sequence(seq, to_ix):
    idxs = [to_ix[w] for w in seq]
    return torch.tensor(idxs, dtype=torch.long)


# Compute log sum exp in a numerically stable way for the forward algorithm
def log_sum_exp(vec):
    max_score = vec[0, argmax(vec)]
    max_score_broadcast = max_score.view(1, -1).expand(1, vec.size()[1])
    return max_score + \
        torch.log(torch.sum(torch.exp(vec - max_score_broadcast)))

#####################################################################
# Create model


class BiLSTM_CRF(nn.Module):

    def __init__(self, vocab_size, tag_to_ix, embedding_dim, hidden_dim):
        super(BiLSTM_CRF, self).__init__()
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.vocab_size = vocab_size
        self.tag_to_ix = tag_to_ix
        self.tagset_size = len(tag_to_ix)

        self.word_embeds = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim // 2,
                            num_layers=1, bidirectional=True)

        # Maps the output of the LSTM into tag space.
        self.hidden2tag = nn.Linear(hidden_dim, self.tagset_size)

        # Matrix of transition parameters.  Entry i,j is the score of
        # transitioning *to* i *from* j.
        self.transitions = nn.Parameter(
            torch.randn(self.tagset_size, self.tagset_size))

        # These two statements enforce the constraint that we never transfer
        # to the start tag and we never transfer from the stop tag
        self.transitions.data[tag_to_ix[START_TAG], :] = -10000
        self.transitions.data[:, tag_to_ix[STOP_TAG]] = -10000

        self.hidden = self.init_hidden()

    def init_hidden(self):
        return (torch.randn(2, 1, self.hidden_dim // 2),
                torch.randn(2, 1, self.hidden_dim // 2))

    def _forward_alg(self, feats):
        # Do the forward algorithm to compute the partition function
        init_alphas = torch.full((1, self.tagset_size), -10000.)
        # START_TAG has all of the score.
        init_alphas[0][self.tag_to_ix[START_TAG]] = 0.

        # Wrap in a variable so that we will get automatic backprop
        forward_var = init_alphas

        # Iterate through the sentence
        for feat in feats:
            # All next tags at once: entry [next_tag, i] is the score of the
            # edge (i -> next_tag): forward score of i, plus the transition
            # score to next_tag, plus the emission score of next_tag (the same
            # regardless of the previous tag)
            next_tag_var = forward_var + self.transitions + feat.view(-1, 1)
            # The forward variable for each tag is log-sum-exp of its row.
            forward_var = torch.logsumexp(next_tag_var, dim=1).view(1, -1)
        terminal_var = forward_var + self.transitions[self.tag_to_ix[STOP_TAG]]
        alpha = log_sum_exp(terminal_var)
        return alpha

    def _get_lstm_features(self, sentence):
        self.hidden = self.init_hidden()
        embeds = self.word_embeds(sentence).view(len(sentence), 1, -1)
        lstm_out, self.hidden = self.lstm(embeds, self.hidden)
        lstm_out = lstm_out.view(len(sentence), self.hidden_dim)
        lstm_feats = self.hidden2tag(lstm_out)
        return lstm_feats

    def _score_sentence(self, feats, tags):
        # Gives the score of a provided tag sequence
        score = torch.zeros(1)
        tags = torch.cat([torch.tensor([self.tag_to_ix[START_TAG]], dtype=torch.long), tags])
        for i, feat in enumerate(feats):
            score = score + \
                self.transitions[tags[i + 1], tags[i]] + feat[tags[i + 1]]
        score = score + self.transitions[self.tag_to_ix[STOP_TAG], tags[-1]]
        return score

    def _viterbi_decode(self, feats):
        backpointers = []

        # Initialize the viterbi variables in log space
        init_vvars = torch.full((1, self.tagset_size), -10000.)
        init_vvars[0][self.tag_to_ix[START_TAG]] = 0

        # forward_var at step i holds the viterbi variables for step i-1
        forward_var = init_vvars
        for feat in feats:
            bptrs_t = []  # holds the backpointers for this step
            viterbivars_t = []  # holds the viterbi variables for this step

            for next_tag in range(self.tagset_size):
                # next_tag_var[i] holds the viterbi variable for tag i at the
                # previous step, plus the score of transitioning
                # from tag i to next_tag.
                # We don't include the emission scores here because the max
                # does not depend on them (we add them in below)
                next_tag_var = forward_var + self.transitions[next_tag]
                best_tag_id = argmax(next_tag_var)
                bptrs_t.append(best_tag_id)
                viterbivars_t.append(next_tag_var[0][best_tag_id].view(1))
            # Now add in the emission scores, and assign forward_var to the set
            # of viterbi variables we just computed
            forward_var = (torch.cat(viterbivars_t) + feat).view(1, -1)
            backpointers.append(bptrs_t)

        # Transition to STOP_TAG
        terminal_var = forward_var + self.transitions[self.tag_to_ix[STOP_TAG]]
        best_tag_id = argmax(terminal_var)
        path_score = terminal_var[0][best_tag_id]

        # Follow the back pointers to decode the best path.
        best_path = [best_tag_id]
        for bptrs_t in reversed(backpointers):
            best_tag_id = bptrs_t[best_tag_id]
            best_path.append(best_tag_id)
        # Pop off the start tag (we dont want to return that to the caller)
        start = best_path.pop()
        assert start == self.tag_to_ix[START_TAG]  # Sanity check
        best_path.reverse()
        return path_score, best_path

    def neg_log_likelihood(self, sentence, tags):
        feats = self._get_lstm_features(sentence)
        forward_score = self._forward_alg(feats)
        gold_score = self._score_sentence(feats, tags)
        return forward_score - gold_score

    def forward(self, sentence):  # dont confuse this with _forward_alg above.
        # Get the emission scores from the BiLSTM
        lstm_feats = self._get_lstm_features(sentence)

        # Find the best path, given the features.
        score, tag_seq = self._viterbi_decode(lstm_feats)
        return score, tag_seq

#####################################################################
# Run training


START_TAG = "<START>"
STOP_TAG = "<STOP>"
EMBEDDING_DIM = 16
HIDDEN_DIM = 16

# Make up some training data
ENTITIES = ["wall street journal", "apple corporation", "georgia tech", "georgia",
            "new york times", "new york", "united states", "university of georgia",
            "bank of america", "america", "apple", "york university"]
FILLER = ("the reported today that made money is a in of ate an fruit three times "
          "new street bank walked to visited said from big old").split()


def make_sentence():
    words, tags = [], []
    while len(words) < random.randint(4, 8):
        if random.random() < 0.3:
            ent = random.choice(ENTITIES).split()
            words += ent
            tags += ["B"] + ["I"] * (len(ent) - 1)
        else:
            words.append(random.choice(FILLER))
            tags.append("O")
    return words, tags


training_data = [make_sentence() for _ in range(40)]
test_data = [make_sentence() for _ in range(30)]

word_to_ix = {}
for sentence, tags in training_data + test_data:
    for word in sentence:
        if word not in word_to_ix:
            word_to_ix[word] = len(word_to_ix)

tag_to_ix = {"B": 0, "I": 1, "O": 2, START_TAG: 3, STOP_TAG: 4}

model = BiLSTM_CRF(len(word_to_ix), tag_to_ix, EMBEDDING_DIM, HIDDEN_DIM)
optimizer = optim.SGD(model.parameters(), lr=0.01, weight_decay=1e-4)


def tag_accuracy(data):
    right = total = 0
    with torch.no_grad():
        for sentence, tags in data:
            _, pred = model(prepare_sequence(sentence, word_to_ix))
            right += sum(p == tag_to_ix[t] for p, t in zip(pred, tags))
            total += len(tags)
    return right / total


# Check predictions before training
with torch.no_grad():
    precheck_sent = prepare_sequence(training_data[0][0], word_to_ix)
    print(model(precheck_sent))

for epoch in range(25):
    total = 0.0
    for sentence, tags in training_data:
        # Step 1. Remember that Pytorch accumulates gradients.
        # We need to clear them out before each instance
        model.zero_grad()

        # Step 2. Get our inputs ready for the network, that is,
        # turn them into Tensors of word indices.
        sentence_in = prepare_sequence(sentence, word_to_ix)
        targets = torch.tensor([tag_to_ix[t] for t in tags], dtype=torch.long)

        # Step 3. Run our forward pass.
        loss = model.neg_log_likelihood(sentence_in, targets)

        # Step 4. Compute the loss, gradients, and update the parameters by
        # calling optimizer.step()
        loss.backward()
        optimizer.step()
        total += loss.item()
    if epoch % 5 == 4:
        print(f"epoch {epoch + 1} nll {total / len(training_data):.3f} test tag acc {tag_accuracy(test_data):.3f}")

# Check predictions after training
with torch.no_grad():
    precheck_sent = prepare_sequence(training_data[0][0], word_to_ix)
    print(model(precheck_sent))
n_o = sum(t == "O" for _, tags in test_data for t in tags) / sum(len(t) for _, t in test_data)
print(f"final: nll {total / len(training_data):.3f} train acc {tag_accuracy(training_data):.3f} test tag acc {tag_accuracy(test_data):.3f} (all-O {n_o:.3f})")
