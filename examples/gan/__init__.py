"""A DCGAN-lite on the shipped MNIST digits: the user code behind training.json and friends.

Everything here is ordinary PyTorch; how the pieces are wired (which model is trained by which
pipeline, where gradients stop) is said in the specs. See README.md.
"""
import gzip
import os

import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset
from torchvision.utils import make_grid

from torchassistant.collators import BatchDivide

# ---- data ----------------------------------------------------------------------------------------

class MnistImages(Dataset):
    """The digits of an MNIST IDX image file (gzipped or not) as (image,) examples: a float tensor
    (1, 28, 28) scaled to [-1, 1], the range of the generator's tanh. `limit` keeps the first N."""

    def __init__(self, path, limit=None):
        opener = gzip.open if path.endswith('.gz') else open
        with opener(path, 'rb') as f:
            data = f.read()
        if len(data) < 16 or int.from_bytes(data[:4], 'big') != 2051:
            raise ValueError(f'{path} is not an MNIST IDX image file (its magic number is not 2051)')
        count, rows, columns = (int.from_bytes(data[i:i + 4], 'big') for i in (4, 8, 12))
        count = count if limit is None else min(count, limit)
        pixels = torch.frombuffer(bytearray(data[16:16 + count * rows * columns]), dtype=torch.uint8)
        self.images = pixels.view(count, 1, rows, columns).float() / 127.5 - 1

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return (self.images[index],)


def latent_vector(seed, latent_dim):
    """The latent vector of `seed`: standard normal, the same on every run and machine."""
    return torch.randn(latent_dim, generator=torch.Generator().manual_seed(seed))


class LatentNoise(Dataset):
    """`size` latent vectors as (noise,) examples; example i is latent_vector(first_seed + i)."""

    def __init__(self, size, latent_dim, first_seed=0):
        self.size, self.latent_dim, self.first_seed = size, latent_dim, first_seed

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        if not 0 <= index < self.size:
            raise IndexError(index)
        return (latent_vector(self.first_seed + index, self.latent_dim),)


class StackTensors(BatchDivide):
    """A batch of examples of tensors -> a tuple of stacked tensors, one per example element."""

    def __call__(self, batch):
        return tuple(torch.stack(column) for column in super().__call__(batch))


# ---- models --------------------------------------------------------------------------------------

class Generator(nn.Module):
    """Latent vector (latent_dim,) -> image (1, 28, 28) in [-1, 1]: a linear layer to 7x7 feature
    maps, then two transposed convolutions up to 14x14 and 28x28."""

    def __init__(self, latent_dim=32, width=64):
        super().__init__()
        self.width = width
        self.project = nn.Sequential(nn.Linear(latent_dim, 2 * width * 7 * 7), nn.BatchNorm1d(2 * width * 7 * 7),
                                     nn.ReLU())
        self.upsample = nn.Sequential(nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.ConvTranspose2d(width, 1, 4, 2, 1), nn.Tanh())

    def forward(self, noise):
        return [self.upsample(self.project(noise).view(-1, 2 * self.width, 7, 7))]


class Discriminator(nn.Module):
    """Image (1, 28, 28) -> one logit, > 0 meaning "real". No batch norm: real and fake batches go
    through it separately, and its statistics would differ between them."""

    def __init__(self, width=32):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Flatten(), nn.Linear(2 * width * 7 * 7, 1))

    def forward(self, image):
        return [self.net(image).squeeze(1)]


class Detach(nn.Module):
    """A graph node that passes its input on with no gradient path back: what comes after it cannot
    push gradients into what came before."""

    def forward(self, x):
        return [x.detach()]


# ---- losses and metrics --------------------------------------------------------------------------

def labelled_real(logits):
    """Loss transform: the logits with target 1 ("real"), for BCEWithLogitsLoss."""
    return logits, torch.ones_like(logits)


def labelled_real_smoothed(logits):
    """Loss transform for the discriminator's real batches: target 0.9, not 1 (one-sided label
    smoothing), so it cannot become certain and starve the generator of gradient."""
    return logits, torch.full_like(logits, 0.9)


def labelled_fake(logits):
    """Loss transform: the logits with target 0 ("fake")."""
    return logits, torch.zeros_like(logits)


def real_vs_fake(real_logits, fake_logits):
    """Metric transform for Accuracy: the discriminator's verdicts on a real and a fake batch
    together, against the truth (1 real, 0 fake)."""
    verdicts = torch.cat([real_logits > 0, fake_logits > 0]).long()
    truth = torch.cat([torch.ones_like(real_logits), torch.zeros_like(fake_logits)]).long()
    return verdicts, truth


class MeanProbability:
    """Metric: the mean probability of "real" the discriminator gives, sigmoid(logit)."""

    def __call__(self, logits):
        return torch.sigmoid(logits).mean()


# ---- inference -----------------------------------------------------------------------------------

class SeedToLatent:
    """Input converter: an integer seed (a command-line input) -> the example (latent_vector(seed),)."""

    def __init__(self, latent_dim):
        self.latent_dim = latent_dim

    def __call__(self, text):
        try:
            seed = int(text)
        except ValueError:
            raise ValueError(f'expected an integer seed, e.g. 7 (or $(seq 1 64) for 64 samples); got {text!r}') \
                from None
        return (latent_vector(seed, self.latent_dim),)


def seed_converter(session, noise_dataset):
    """Factory of the input converter: the latent size is read from the training noise dataset, so
    the inference spec cannot disagree with the generator."""
    return SeedToLatent(session.datasets[noise_dataset].latent_dim)


class SampleGrid:
    """Output device: writes the generated images of a batch as a grid to a PNG file, `columns` wide,
    each pixel `scale` x `scale`. Inputs from a file come in several batches: the second batch goes
    to NAME_2.png, and so on, so none overwrites another."""

    def __init__(self, path='gan_samples.png', variable='fake', columns=8, scale=2):
        self.path, self.variable, self.columns, self.scale = path, variable, columns, scale
        self.calls = 0

    def __call__(self, results):
        images = results[self.variable].detach().cpu().float()
        grid = make_grid(images * 0.5 + 0.5, nrow=self.columns, padding=2, pad_value=0.5)
        pixels = (grid[0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        picture = Image.fromarray(pixels)
        picture = picture.resize((picture.width * self.scale, picture.height * self.scale), Image.Resampling.NEAREST)
        self.calls += 1
        root, extension = os.path.splitext(self.path)
        path = self.path if self.calls == 1 else f'{root}_{self.calls}{extension}'
        if os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        picture.save(path)
        print(f'Wrote {len(images)} generated digits to {path} ({picture.width}x{picture.height} pixels)')
