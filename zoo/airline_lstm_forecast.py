"""Time-series prediction with an LSTM (airline passengers, spdin's Colab notebook).

Upstream: https://github.com/spdin/time-series-prediction-lstm-pytorch/blob/master/Time_Series_Prediction_with_LSTM_Using_PyTorch.ipynb
Licence: none stated upstream (public notebook; ported here for testing only)
Changes: airline-passengers.csv replaced by a generated monthly series of the same shape
  (144 months, trend times a 12-month season plus noise, about 100 to 600 passengers);
  sklearn's MinMaxScaler replaced by a small class with the same fit / transform /
  inverse_transform; Variable() kept (a no-op on current torch); the final plot of
  lstm(dataX) (train and test windows together) replaced by an evaluation on testX alone,
  under no_grad, printing MSE and nRMSE = RMSE / std of the targets (about 1 for a
  mean predictor; the test months lie above the training range, so a predictor of the
  training mean scores well above 1 there). Full-batch training repeats the same 92
  windows 2000 times by design (upstream), hence duplicate-samples is allowed.
Steps: 300
Allow: duplicate-samples

Bug: no-minmax-scaling
Expect: unnormalized-inputs
Allow: gate-saturation, stuck-at-chance, duplicate-samples
Why: the MinMax scaling step is skipped, so the LSTM is fed raw passenger counts (100 to 600)
- training_data = sc.transform(training_set)
+ training_data = training_set

Bug: forget-bias-minus-ten
Expect: forget-gate-saturation
Allow: duplicate-samples
Why: a hand-set forget-gate bias of -10 (sign slip on the usual forget-bias trick) pins f ~ 0 for the whole run (b_f still ~ -10.4 at the end): the cell is wiped every step; on 4-step windows the fit hardly suffers
- optimizer = torch.optim.Adam(lstm.parameters(), lr=learning_rate)
+ lstm.lstm.bias_ih_l0.data[hidden_size:2 * hidden_size] = -10.0; optimizer = torch.optim.Adam(lstm.parameters(), lr=learning_rate)

Bug: targets-shuffled
Expect: stuck-at-chance
Allow: duplicate-samples
Why: the training targets are shuffled apart from their windows, so the next value cannot be predicted: the LSTM settles on the mean
- trainY = Variable(torch.Tensor(np.array(y[0:train_size])))
+ trainY = Variable(torch.Tensor(np.random.permutation(y[0:train_size])))
"""

import numpy as np
import torch
import torch.nn as nn
from torch.autograd import Variable

np.random.seed(0)
torch.manual_seed(0)


class MinMaxScaler:
    """sklearn.preprocessing.MinMaxScaler, feature_range=(0, 1)."""

    def fit(self, X):
        self.data_min_ = X.min(axis=0)
        self.data_range_ = X.max(axis=0) - self.data_min_
        return self

    def transform(self, X):
        return (X - self.data_min_) / self.data_range_

    def fit_transform(self, X):
        return self.fit(X).transform(X)

    def inverse_transform(self, X):
        return X * self.data_range_ + self.data_min_


# airline-passengers.csv: 144 monthly totals, 1949-1960 (generated here)
months = np.arange(144)
passengers = (110 + 2.6 * months) * (1 + 0.22 * np.sin(2 * np.pi * (months - 3) / 12)) + np.random.normal(0, 6, 144)
training_set = passengers.astype("float32").reshape(-1, 1)


def sliding_windows(data, seq_length):
    x = []
    y = []

    for i in range(len(data)-seq_length-1):
        _x = data[i:(i+seq_length)]
        _y = data[i+seq_length]
        x.append(_x)
        y.append(_y)

    return np.array(x),np.array(y)

sc = MinMaxScaler()
sc.fit(training_set)
training_data = sc.transform(training_set)

seq_length = 4
x, y = sliding_windows(training_data, seq_length)

train_size = int(len(y) * 0.67)
test_size = len(y) - train_size

dataX = Variable(torch.Tensor(np.array(x)))
dataY = Variable(torch.Tensor(np.array(y)))

trainX = Variable(torch.Tensor(np.array(x[0:train_size])))
trainY = Variable(torch.Tensor(np.array(y[0:train_size])))

testX = Variable(torch.Tensor(np.array(x[train_size:len(x)])))
testY = Variable(torch.Tensor(np.array(y[train_size:len(y)])))


class LSTM(nn.Module):

    def __init__(self, num_classes, input_size, hidden_size, num_layers):
        super(LSTM, self).__init__()

        self.num_classes = num_classes
        self.num_layers = num_layers
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.seq_length = seq_length

        self.lstm = nn.LSTM(input_size=input_size, hidden_size=hidden_size,
                            num_layers=num_layers, batch_first=True)

        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        h_0 = Variable(torch.zeros(
            self.num_layers, x.size(0), self.hidden_size))

        c_0 = Variable(torch.zeros(
            self.num_layers, x.size(0), self.hidden_size))

        # Propagate input through LSTM
        ula, (h_out, _) = self.lstm(x, (h_0, c_0))

        h_out = h_out.view(-1, self.hidden_size)

        out = self.fc(h_out)

        return out


num_epochs = 2000
learning_rate = 0.01

input_size = 1
hidden_size = 2
num_layers = 1

num_classes = 1

lstm = LSTM(num_classes, input_size, hidden_size, num_layers)

criterion = torch.nn.MSELoss()    # mean-squared error for regression
optimizer = torch.optim.Adam(lstm.parameters(), lr=learning_rate)
#optimizer = torch.optim.SGD(lstm.parameters(), lr=learning_rate)

# Train the model
for epoch in range(num_epochs):
    outputs = lstm(trainX)
    optimizer.zero_grad()

    # obtain the loss function
    loss = criterion(outputs, trainY)

    loss.backward()

    optimizer.step()
    if epoch % 100 == 0:
      print("Epoch: %d, loss: %1.5f" % (epoch, loss.item()))

lstm.eval()
with torch.no_grad():
    test_predict = lstm(testX)

data_predict = test_predict.data.numpy()
dataY_plot = testY.data.numpy()

# error on the held-out months (upstream plots lstm(dataX) against dataY here)
mse = np.mean((data_predict - dataY_plot) ** 2)
nrmse = np.sqrt(mse) / dataY_plot.std()
print(f"final: train loss {loss.item():.5f}, test MSE {mse:.5f}, test nRMSE {nrmse:.3f}")
