"""The one place that decides where tensors live and in what precision they are computed.

The device, first given wins: the command's --device option, the spec's "device", the environment
variable TORCHASSISTANT_DEVICE, then "auto" (CUDA if present, else MPS, else CPU). Precision likewise:
--precision, the spec's "precision", then "32".
"""
import os

import torch

from torchassistant.core.errors import UsageError


def choose_device(option=None, spec_value=None, where='--device'):
    """The torch.device to run on; a UsageError when the request cannot be met here."""
    name, source = next(((value, label) for value, label in (
        (option, '--device'), (spec_value, where), (os.environ.get('TORCHASSISTANT_DEVICE'), 'TORCHASSISTANT_DEVICE'))
        if value), ('auto', None))
    if name == 'auto':
        if torch.cuda.is_available():
            return torch.device('cuda')
        if _mps_available():
            return torch.device('mps')
        return torch.device('cpu')
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f'{source}: "{name}" is not a device; use "auto", "cpu", "cuda", "cuda:N" or "mps"') from None
    if device.type == 'cuda':
        if not torch.cuda.is_available():
            raise UsageError(f'{source} asks for "{name}", but this machine has no CUDA device '
                             f'(torch {torch.__version__}{"" if torch.version.cuda else ", a CPU-only build"}); '
                             f'use "cpu" or "auto"')
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f'{source} asks for "{name}", but this machine has {torch.cuda.device_count()} '
                             f'CUDA device(s): cuda:0..cuda:{torch.cuda.device_count() - 1}')
    elif device.type == 'mps' and not _mps_available():
        raise UsageError(f'{source} asks for "mps", but MPS (Apple GPUs) is not available here; use "cpu" or "auto"')
    elif device.type not in ('cpu', 'cuda', 'mps'):
        raise UsageError(f'{source}: device type "{device.type}" is not supported; use "auto", "cpu", "cuda", '
                         f'"cuda:N" or "mps"')
    return device


def choose_precision(option=None, spec_value=None):
    return option or spec_value or '32'


def _mps_available():
    backend = getattr(torch.backends, 'mps', None)
    return bool(backend and backend.is_available())
