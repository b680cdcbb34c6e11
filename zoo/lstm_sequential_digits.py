"""Sequential digit classifier: a 2-layer LSTM reads an image row by row (many-to-one).

Upstream: https://github.com/yunjey/pytorch-tutorial/blob/master/tutorials/02-intermediate/recurrent_neural_network/main.py
Licence: MIT (as GitHub lists the repository; not checked against a LICENSE file)
Changes: torchvision MNIST replaced by SyntheticDigits, a map-style Dataset of 14x14 digit-like
  images: ten stroke templates drawn once (the task's hidden parameters), each sample its
  class template shifted by up to two pixels, with random stroke intensity and noise, stored as
  8-bit grey levels and scaled to [0, 1] as ToTensor() does; __getitem__(i) seeds its own
  generator from i, so an index always gives the same sample. 50000 training and 2000 test
  images (2 epochs of 500 steps, as upstream's 2 epochs of 600); sequence_length and
  input_size 14 instead of 28, hidden_size 32 instead of 128; no device handling, no
  checkpoint saved; a final line with test loss and accuracy.
Steps: 300

Bug: templates-redrawn-per-sample
Expect: resampled-parameters
Allow: stuck-at-chance
Why: __getitem__ draws fresh stroke templates on every call, so the image->label mapping changes per sample (seed 004)
- strokes = self.templates[label]
+ strokes = make_templates()[label]

Bug: mse-on-one-hot
Expect: loss-output-mismatch
Why: MSE between the unbounded linear logits and one-hot class labels instead of CrossEntropyLoss (seed 002)
- loss = criterion(outputs, labels)
+ loss = nn.MSELoss()(outputs, nn.functional.one_hot(labels, num_classes).float())

Bug: no-to-tensor-scaling
Expect: unnormalized-inputs
Allow: gate-saturation
Why: the 8-bit grey levels (0..255) reach the LSTM unscaled, as when transforms.ToTensor() is left out
- return image.unsqueeze(0) / 255.0, label
+ return image.unsqueeze(0), label
"""

import torch
import torch.nn as nn
from torch.utils.data import Dataset

torch.manual_seed(0)

# Device configuration
device = torch.device('cpu')

# Hyper-parameters
sequence_length = 14
input_size = 14
hidden_size = 32
num_layers = 2
num_classes = 10
batch_size = 100
num_epochs = 2
learning_rate = 0.01


# Synthetic digit-like dataset (stands in for torchvision.datasets.MNIST)
def make_templates(generator=None, side=14, strokes=3, points=24):
    """Ten classes, each a fixed drawing of a few straight strokes on a side x side grid."""
    ends = torch.randint(1, side - 1, (num_classes, strokes, 2, 2), generator=generator).float()
    t = torch.linspace(0, 1, points).view(1, 1, points, 1)
    path = ends[:, :, :1] + t * (ends[:, :, 1:] - ends[:, :, :1])      # classes x strokes x points x 2
    path = path.round().long().view(num_classes, -1, 2)
    canvas = torch.zeros(num_classes, side, side)
    cls = torch.arange(num_classes).view(-1, 1).expand(-1, path.size(1))
    canvas[cls, path[..., 0], path[..., 1]] = 1.0
    return canvas


class SyntheticDigits(Dataset):
    def __init__(self, n, seed):
        self.n = n
        self.seed = seed
        self.templates = make_templates(torch.Generator().manual_seed(1234))  # same for train and test
        self.labels = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(self.seed * 1000003 + index)
        label = int(self.labels[index])
        strokes = self.templates[label]
        dy, dx = torch.randint(-2, 3, (2,), generator=g).tolist()
        image = torch.roll(strokes, shifts=(dy, dx), dims=(0, 1))
        image = image * (0.6 + 0.4 * torch.rand(1, generator=g)) + 0.4 * torch.randn(image.shape, generator=g)
        image = (image.clamp(0, 1) * 255).round()  # 8-bit grey levels, as in the MNIST files
        return image.unsqueeze(0) / 255.0, label


# MNIST dataset
train_dataset = SyntheticDigits(50000, seed=1)

test_dataset = SyntheticDigits(2000, seed=2)

# Data loader
train_loader = torch.utils.data.DataLoader(dataset=train_dataset,
                                           batch_size=batch_size,
                                           shuffle=True)

test_loader = torch.utils.data.DataLoader(dataset=test_dataset,
                                          batch_size=batch_size,
                                          shuffle=False)


# Recurrent neural network (many-to-one)
class RNN(nn.Module):
    def __init__(self, input_size, hidden_size, num_layers, num_classes):
        super(RNN, self).__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x):
        # Set initial hidden and cell states
        h0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size).to(device)
        c0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size).to(device)

        # Forward propagate LSTM
        out, _ = self.lstm(x, (h0, c0))  # out: tensor of shape (batch_size, seq_length, hidden_size)

        # Decode the hidden state of the last time step
        out = self.fc(out[:, -1, :])
        return out


model = RNN(input_size, hidden_size, num_layers, num_classes).to(device)


# Loss and optimizer
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)

# Train the model
total_step = len(train_loader)
for epoch in range(num_epochs):
    for i, (images, labels) in enumerate(train_loader):
        images = images.reshape(-1, sequence_length, input_size).to(device)
        labels = labels.to(device)

        # Forward pass
        outputs = model(images)
        loss = criterion(outputs, labels)

        # Backward and optimize
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

        if (i+1) % 100 == 0:
            print('Epoch [{}/{}], Step [{}/{}], Loss: {:.4f}'
                  .format(epoch+1, num_epochs, i+1, total_step, loss.item()))

# Test the model
with torch.no_grad():
    correct = 0
    total = 0
    test_loss = 0.0
    for images, labels in test_loader:
        images = images.reshape(-1, sequence_length, input_size).to(device)
        labels = labels.to(device)
        outputs = model(images)
        test_loss += nn.functional.cross_entropy(outputs, labels, reduction='sum').item()
        _, predicted = torch.max(outputs.data, 1)
        total += labels.size(0)
        correct += (predicted == labels).sum().item()

    print('Test Accuracy of the model on the {} test images: {} %'.format(total, 100 * correct / total))
    print('final: last train loss {:.4f}, test loss {:.4f}, test accuracy {:.3f} (chance 0.100)'.format(
        loss.item(), test_loss / total, correct / total))
