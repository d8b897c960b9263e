"""The MNIST tutorial's training written by hand in plain PyTorch: what examples/mnist/training.json
asks TorchAssistant to do, for one epoch.

    python bench/hand_tutorial.py --kind FashionMNIST --root DIR --seed S --workers 2 --checkpoint FILE
    torchrun --nproc_per_node=2 bench/hand_tutorial.py ... --workers 0      (DistributedDataParallel, gloo)

LeNet5 and MyCollator from examples/mnist, DataLoader(batch_size=32, num_workers=N), Adam(lr=1e-3),
CrossEntropyLoss after convert_labels, running accuracy (reverse_onehot) and loss kept on the device
and printed every 10% of the epoch; then validation on the training and the test loader, the epoch's
line in the tutorial's format, and a checkpoint (model and optimizer) saved with torch.save.

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
    args = parser.parse_args()

    import torch
    import torchvision
    from torch import nn
    from torch.utils.data import DataLoader

    from examples.mnist import LeNet5, MyCollator, convert_labels, reverse_onehot

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
    model = LeNet5()
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
    correct, loss_sum, seen = torch.zeros((), dtype=torch.long), torch.zeros(()), 0
    every = max(1, -(-len(train_loader) // 10))
    for batch, (x, labels) in enumerate(train_loader, start=1):
        y_hat = network(x)[0]
        scores, targets = convert_labels(y_hat, labels)
        loss = criterion(scores, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        predictions, truth = reverse_onehot(y_hat, labels)
        correct += (predictions == truth).sum()
        loss_sum += loss.detach() * len(labels)
        seen += len(labels)
        if rank == 0 and (batch % every == 0 or batch == len(train_loader)):
            print(f'Epoch     1 [acc {correct.item() / seen:.4f}, loss {loss_sum.item() / seen:.4f}] '
                  f'{batch} / {len(train_loader)}', flush=True)

    # ---- validation on the training and the test loader ----
    def evaluate(data_loader):
        network.eval()
        sums = torch.zeros(3, dtype=torch.float64)        # loss sum, correct, examples
        with torch.inference_mode():
            for x, labels in data_loader:
                y_hat = network(x)[0]
                scores, targets = convert_labels(y_hat, labels)
                predictions, truth = reverse_onehot(y_hat, labels)
                sums += torch.stack([criterion(scores, targets).double() * len(labels),
                                     (predictions == truth).sum().double(),
                                     torch.tensor(len(labels), dtype=torch.float64)])
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
