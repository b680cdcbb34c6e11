"""Sine-wave prediction with two stacked LSTMCells, trained full-batch with LBFGS.

Upstream: https://github.com/pytorch/examples/tree/main/time_sequence_prediction
Licence: BSD-3-Clause
Changes: generate_sine_wave.py and train.py in one file; the waves are built in memory
  instead of traindata.pt, smaller (N=40 series of L=100 points, T=10 instead of
  100 x 1000, T=20) so that LBFGS's 20 closure calls per step stay cheap on a CPU;
  10 steps instead of 15; the no_grad future prediction runs 200 points instead of
  1000 and is not plotted (no matplotlib, no predict%d.pdf); a final line with the
  train and test MSE.
Steps: 300

Bug: amplitude-1000
Expect: unnormalized-inputs
Allow: gate-saturation, stuck-at-chance, divergence, exploding-gradients, learning-rate-scale, forget-gate-saturation, poor-initial-loss
Why: the waves come in thousandths (amplitude 1000) and are fed unscaled: the first LSTMCell's gates saturate, the MSE creeps from the target variance (4.9e5) to ~8e4, then an LBFGS step throws it to 1e14 (1e11 at the end)
- data = np.sin(x / 1.0 / T).astype('float64')
+ data = 1000 * np.sin(x / 1.0 / T).astype('float64')

Bug: lbfgs-lr-5
Expect: divergence
Allow: exploding-gradients, learning-rate-scale, gate-saturation, forget-gate-saturation
Why: LBFGS without line search takes lr times its quasi-Newton step; at lr=5 the first step already throws the weights out and the MSE climbs to ~1e237 (float64, never NaN)
- optimizer = optim.LBFGS(seq.parameters(), lr=0.8)
+ optimizer = optim.LBFGS(seq.parameters(), lr=5)

Bug: lbfgs-lr-20
Expect: non-finite
Allow: divergence, exploding-gradients, learning-rate-scale, gate-saturation, forget-gate-saturation
Why: at lr=20 the loss climbs to 1e258 in five steps, overflows float64 at the sixth and turns NaN; LBFGS then writes NaN into every weight
- optimizer = optim.LBFGS(seq.parameters(), lr=0.8)
+ optimizer = optim.LBFGS(seq.parameters(), lr=20)
"""
from __future__ import print_function
import argparse
import torch
import torch.nn as nn
import torch.optim as optim
import numpy as np

# generate_sine_wave.py
np.random.seed(2)

T = 10
L = 100
N = 40

x = np.empty((N, L), 'int64')
x[:] = np.array(range(L)) + np.random.randint(-4 * T, 4 * T, N).reshape(N, 1)
data = np.sin(x / 1.0 / T).astype('float64')


class Sequence(nn.Module):
    def __init__(self):
        super(Sequence, self).__init__()
        self.lstm1 = nn.LSTMCell(1, 51)
        self.lstm2 = nn.LSTMCell(51, 51)
        self.linear = nn.Linear(51, 1)

    def forward(self, input, future = 0):
        outputs = []
        h_t = torch.zeros(input.size(0), 51, dtype=torch.double)
        c_t = torch.zeros(input.size(0), 51, dtype=torch.double)
        h_t2 = torch.zeros(input.size(0), 51, dtype=torch.double)
        c_t2 = torch.zeros(input.size(0), 51, dtype=torch.double)

        for input_t in input.split(1, dim=1):
            h_t, c_t = self.lstm1(input_t, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        for i in range(future):# if we should predict the future
            h_t, c_t = self.lstm1(output, (h_t, c_t))
            h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
            output = self.linear(h_t2)
            outputs += [output]
        outputs = torch.cat(outputs, dim=1)
        return outputs


if __name__ == '__main__':
    parser = argparse.ArgumentParser()
    parser.add_argument('--steps', type=int, default=10, help='steps to run')
    opt = parser.parse_args()
    # set random seed to 0
    np.random.seed(0)
    torch.manual_seed(0)
    # load data and make training set
    input = torch.from_numpy(data[3:, :-1])
    target = torch.from_numpy(data[3:, 1:])
    test_input = torch.from_numpy(data[:3, :-1])
    test_target = torch.from_numpy(data[:3, 1:])
    # build the model
    seq = Sequence()
    seq.double()
    criterion = nn.MSELoss()
    # use LBFGS as optimizer since we can load the whole data to train
    optimizer = optim.LBFGS(seq.parameters(), lr=0.8)
    #begin to train
    for i in range(opt.steps):
        print('STEP: ', i)
        def closure():
            optimizer.zero_grad()
            out = seq(input)
            loss = criterion(out, target)
            print('loss:', loss.item())
            loss.backward()
            return loss
        train_loss = optimizer.step(closure)
        # begin to predict, no need to track gradient here
        with torch.no_grad():
            future = 200
            pred = seq(test_input, future=future)
            loss = criterion(pred[:, :-future], test_target)
            print('test loss:', loss.item())
            y = pred.detach().numpy()
    print('final: train loss %.3g | test loss %.3g | target variance %.3g'
          % (train_loss.item(), loss.item(), test_target.var().item()))
