"""The one place that decides where tensors live."""
import os

import torch


def choose_device():
    """`TORCHASSISTANT_DEVICE` if set (e.g. "cpu", "cuda:1"), else CUDA when available, else CPU."""
    name = os.environ.get('TORCHASSISTANT_DEVICE')
    if name:
        return torch.device(name)
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
