"""The original's concise CIFAR-10 example, as concise-specs.md section 4 describes it: the MNIST
example with CIFAR-10's datasets and a small convolutional network for 3 x 32 x 32 images."""
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return [self.fc3(x)]


class InputConverter:
    """An image file -> (RGB image, placeholder target 11), as the original's converters return."""

    def __call__(self, image_path):
        from PIL import Image
        with Image.open(image_path) as im:
            return im.convert('RGB'), 11
