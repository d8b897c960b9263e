"""The MNIST tutorial's training written by hand in plain PyTorch: what examples/mnist/training.json
asks TorchAssistant to do, for one epoch.

    python bench/hand_tutorial.py --kind FashionMNIST --root DIR --seed S --workers 2 --checkpoint FILE
    python bench/hand_tutorial.py ... --device cuda --precision 16-mixed    (a GPU, autocast + GradScaler)
    torchrun --nproc_per_node=2 bench/hand_tutorial.py ... --workers 0      (DistributedDataParallel, gloo)

LeNet5 and MyCollator from examples/mnist, DataLoader(batch_size=32, num_workers=N), Adam(lr=1e-3),
CrossEntropyLoss after convert_labels, running accuracy (reverse_onehot) and loss kept on the device
and printed every 10% of the epoch; then validation on the training and the test loader, the epoch's
line in the tutorial's format, and a checkpoint (model and optimizer) saved with torch.save. On a
GPU, batches go to the device as they come (non_blocking, as TorchAssistant moves them), and with
--precision the forward pass and the loss run under torch.autocast (16-mixed: with a GradScaler).

Under torchrun each process trains on every N-th example (DistributedSampler, no shuffling), validates
on its exact share of each loader, and the sums are all-reduced; rank 0 prints and saves.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # examples.mnist


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--kind', default='FashionMNIST', help='torchvision.datasets class: FashionMNIST or MNIST')
    parser.add_argument('--root', required=True, help='the dataset root (ROOT/KIND/raw holds the files)')
    parser.add_argument('--seed', type=int, required=True, help='torch.manual_seed before the model is made')
    parser.add_argument('--workers', type=int, default=2, help='DataLoader num_workers')
    parser.add_argument('--checkpoint', required=True, help='where to torch.save the model and optimizer')
    parser.add_argument('--device', default='cpu', help='where to train, e.g. cuda (default cpu)')
    parser.add_argument('--precision', default='32', choices=('32', 'bf16-mixed', '16-mixed'),
                        help='autocast dtype, as TorchAssistant\'s "precision" (default 32)')
    args = parser.parse_args()

    import torch
    import torchvision
    from torch import nn
    from torch.utils.data import DataLoader

    from examples.mnist import LeNet5, MyCollator, convert_labels, reverse_onehot

    device = torch.device(args.device)
    dtype = {'32': None, 'bf16-mixed': torch.bfloat16, '16-mixed': torch.float16}[args.precision]

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None

    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = 0
    if world > 1:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel
        from torch.utils.data.distributed import DistributedSampler
        dist.init_process_group('gloo')
        rank = dist.get_rank()

    dataset = getattr(torchvision.datasets, args.kind)
    train_ds, test_ds = dataset(args.root, train=True), dataset(args.root, train=False)
    torch.manual_seed(args.seed)
    model = LeNet5().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    collator = MyCollator()

    def loader(ds, training):
        sampler = None
        if world > 1:      # training: padded shards, as DistributedSampler does; validation: each example once
            sampler = DistributedSampler(ds, shuffle=False) if training else range(rank, len(ds), world)
        return DataLoader(ds, batch_size=32, num_workers=args.workers, collate_fn=collator, sampler=sampler)

    train_loader, train_eval_loader, test_loader = loader(train_ds, True), loader(train_ds, False), \
        loader(test_ds, False)
    network = DistributedDataParallel(model, broadcast_buffers=False) if world > 1 else model

    # ---- one epoch of training, running metrics on the device, a progress line every 10% ----
    network.train()
    correct, loss_sum, seen = torch.zeros((), dtype=torch.long, device=device), torch.zeros((), device=device), 0
    every = max(1, -(-len(train_loader) // 10))
    for batch, (x, labels) in enumerate(train_loader, start=1):
        x = x.to(device, non_blocking=True)
        with autocast():
            y_hat = network(x)[0]
            scores, targets = convert_labels(y_hat, labels)
            loss = criterion(scores, targets.to(device, non_blocking=True))
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        predictions, truth = reverse_onehot(y_hat, labels)
        correct += (predictions == truth.to(device, non_blocking=True)).sum()
        loss_sum += loss.detach().float() * len(labels)
        seen += len(labels)
        if rank == 0 and (batch % every == 0 or batch == len(train_loader)):
            print(f'Epoch     1 [acc {correct.item() / seen:.4f}, loss {loss_sum.item() / seen:.4f}] '
                  f'{batch} / {len(train_loader)}', flush=True)

    # ---- validation on the training and the test loader ----
    def evaluate(data_loader):
        network.eval()
        sums, count = torch.zeros(2, dtype=torch.float64, device=device), 0        # loss sum, correct; examples
        with torch.inference_mode():
            for x, labels in data_loader:
                with autocast():
                    y_hat = network(x.to(device, non_blocking=True))[0]
                    scores, targets = convert_labels(y_hat, labels)
                    loss = criterion(scores, targets.to(device, non_blocking=True))
                predictions, truth = reverse_onehot(y_hat, labels)
                sums += torch.stack([loss.double() * len(labels),
                                     (predictions == truth.to(device, non_blocking=True)).sum().double()])
                count += len(labels)
        sums = torch.cat([sums.cpu(), torch.tensor([count], dtype=torch.float64)])
        if world > 1:
            dist.all_reduce(sums)
        return sums[1].item() / sums[2].item(), sums[0].item() / sums[2].item()

    acc, loss = evaluate(train_eval_loader)
    val_acc, val_loss = evaluate(test_loader)
    if rank == 0:
        print(f'Epoch     1 [acc {acc:.4f}, loss {loss:.4f}, val acc {val_acc:.4f}, val loss {val_loss:.4f}]',
              flush=True)
        torch.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'epoch': 1}, args.checkpoint)
    if world > 1:
        dist.destroy_process_group()


if __name__ == '__main__':
    main()
