"""Output devices for inference: called with one argument, the dict of results (name -> value)."""
import os
import time

import torch


class Printer:
    """Prints `name:value` per result."""

    def __call__(self, results):
        for name, value in results.items():
            print(f'{name}:{value.cpu() if isinstance(value, torch.Tensor) else value}')


class SaveAsImages:
    """Saves the last result (images B x C x H x W, or one C x H x W) as one PNG in `folder`, tiled 8 per
    row, un-normalised as x * std + mean, clipped to [0, 1] and scaled to bytes. Files are named
    HH_MM_SS.png, with _1, _2... added when that name is taken."""

    def __init__(self, folder, mean=0.5, std=0.5):
        self.folder = folder
        self.mean = mean
        self.std = std

    def __call__(self, results):
        if not results:
            raise ValueError('SaveAsImages got no results to save')
        images = list(results.values())[-1]
        images = torch.as_tensor(images).detach().cpu().float()
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4:
            raise ValueError(f'SaveAsImages saves images B x C x H x W or C x H x W, got shape {tuple(images.shape)}')
        from torchvision.utils import make_grid
        grid = make_grid((images * self.std + self.mean).clamp(0, 1), nrow=8)
        pixels = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        from PIL import Image
        picture = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
        os.makedirs(self.folder, exist_ok=True)
        path, handle = self._new_file()
        with handle:
            picture.save(handle, format='PNG')
        return path

    def _new_file(self):
        stem = time.strftime('%H_%M_%S')
        for attempt in range(10 ** 6):
            path = os.path.join(self.folder, f'{stem}_{attempt}.png' if attempt else f'{stem}.png')
            try:
                return path, open(path, 'xb')      # exclusive: never overwrites an earlier picture
            except FileExistsError:
                continue
        raise FileExistsError(f'no free file name for {stem}.png in {self.folder}')
