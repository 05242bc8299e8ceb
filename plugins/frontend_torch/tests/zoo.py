"""Small nn.Modules written here (random weights, no hub): the frontend's model zoo."""

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 4))

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.features(x), 1))


class LSTMTagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 12)
        self.lstm = nn.LSTM(12, 16, num_layers=1, batch_first=True)
        self.out = nn.Linear(16, 5)

    def forward(self, tokens):
        h, _ = self.lstm(self.emb(tokens))
        return self.out(h)


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)

    def forward(self, x):
        return self.layer(x)


class InPlace(nn.Module):
    """In-place updates on a temporary, a view written through, and an output aliasing the input."""

    def forward(self, x):
        y = x * 2
        y.add_(1)
        v = y[:, :2]
        v.mul_(3)
        torch.relu_(y)
        return y, x[:, 1:]


class MultiOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 4), nn.Linear(8, 3)

    def forward(self, x, y):
        h = torch.tanh(x + y)
        return {"a": self.a(h), "b": self.b(h).softmax(-1)}, h.sum()


class IntInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 8)

    def forward(self, ids, positions):
        e = self.emb(ids) + self.emb(positions % 100)
        return e.sum(-1), (ids * 3 + positions).argmax(-1)


#: Each zoo model with a function making example inputs: the cases the whole-model tests compile.
CASES = {
    "mlp": (MLP, lambda: (torch.randn(4, 16),)),
    "cnn-batchnorm": (CNN, lambda: (torch.randn(2, 3, 16, 16),)),
    "lstm": (LSTMTagger, lambda: (torch.randint(0, 50, (2, 7)),)),
    "transformer-encoder-layer": (Encoder, lambda: (torch.randn(2, 6, 32),)),
    "in-place-and-aliasing": (InPlace, lambda: (torch.randn(3, 4),)),
    "multiple-outputs": (MultiOut, lambda: (torch.randn(2, 8), torch.randn(2, 8))),
    "int64-inputs": (IntInputs, lambda: (torch.randint(0, 100, (2, 5)), torch.randint(0, 1000, (2, 5)))),
}
