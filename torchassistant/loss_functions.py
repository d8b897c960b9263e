"""Loss functions the framework provides (`torch.nn` losses are found by bare name)."""
import torch
import torch.nn.functional as F


class MaskedCrossEntropy(torch.nn.Module):
    """Mean cross entropy over the positions where the mask is true.

    Called with (logits B x T x V, targets LongTensor B x T, mask bool B x T), as
    `torchassistant.transforms.pad_targets` gives them; T of the logits must be the padded length. The
    mask may also be a `torchassistant.utils.Mask`, as `pad_sequences` returns it."""

    def forward(self, logits, targets, mask):
        if logits.dim() != 3 or logits.shape[:2] != targets.shape:
            raise ValueError(f'MaskedCrossEntropy takes logits B x T x V and targets B x T of the same B and T; '
                             f'got logits {tuple(logits.shape)} and targets {tuple(targets.shape)}')
        mask = getattr(mask, 'mask', mask)        # a utils.Mask holds its tensor as .mask
        losses = F.cross_entropy(logits.transpose(1, 2), targets.to(logits.device), reduction='none')
        mask = mask.to(device=losses.device, dtype=losses.dtype)
        return (losses * mask).sum() / mask.sum().clamp(min=1)
