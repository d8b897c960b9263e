"""The GAN example (examples/gan): its user code, its specs end to end on a tiny setting, and what its
batch graphs guarantee about which model each pipeline changes, read from the session's checkpoints."""
import copy
import csv
import json
import os
import re

import numpy
import pytest
import torch
from conftest import REPO, SAMPLE, run_script, write_json
from PIL import Image

from examples.gan import LatentNoise, MnistImages, SampleGrid, SeedToLatent, StackTensors, real_vs_fake

pytestmark = pytest.mark.e2e


EXAMPLE = os.path.join(REPO, 'examples', 'gan')
FLOAT = r'\d+\.\d{4}'
SIZES = {'training_digits': 256, 'held_out_digits': 128, 'discriminator_noise': 256, 'generator_noise': 256,
         'held_out_noise': 128}


def test_mnist_images_scaled_to_tanh_range():
    digits = MnistImages(os.path.join(SAMPLE, 'train-images-idx3-ubyte.gz'), limit=5)
    assert len(digits) == 5
    image, = digits[0]
    assert image.shape == (1, 28, 28) and image.min() == -1 and image.max() == 1
    with pytest.raises(ValueError, match='not an MNIST IDX image file'):
        MnistImages(os.path.join(SAMPLE, 'train-labels-idx1-ubyte.gz'))


def test_noise_is_reproducible_per_index_and_matches_inference_seeds():
    noise = LatentNoise(10, latent_dim=8, first_seed=100)
    assert torch.equal(noise[3][0], LatentNoise(10, 8, 100)[3][0])
    assert not torch.equal(noise[3][0], noise[4][0])
    assert torch.equal(noise[3][0], SeedToLatent(8)('103')[0])      # infer.py 103 is that training latent
    with pytest.raises(IndexError):
        noise[10]
    with pytest.raises(ValueError, match="expected an integer seed.*'seven'"):
        SeedToLatent(8)('seven')
    batch = StackTensors()([noise[0], noise[1], noise[2]])
    assert len(batch) == 1 and batch[0].shape == (3, 8)


def test_discriminator_accuracy_counts_real_and_fake():
    verdicts, truth = real_vs_fake(torch.tensor([2.0, -1.0]), torch.tensor([-3.0, 0.5, -0.1]))
    assert verdicts.tolist() == [1, 0, 0, 1, 0] and truth.tolist() == [1, 1, 0, 0, 0]


def test_sample_grid_numbers_later_batches(tmp_path):
    device = SampleGrid(str(tmp_path / 'out' / 'grid.png'), columns=4, scale=1)
    device({'fake': torch.zeros(6, 1, 28, 28)})
    device({'fake': torch.ones(2, 1, 28, 28)})
    assert Image.open(tmp_path / 'out' / 'grid.png').size == (4 * 30 + 2, 2 * 30 + 2)
    assert Image.open(tmp_path / 'out' / 'grid_2.png').size == (2 * 30 + 2, 30 + 2)


# ---- the specs, end to end, on a tiny setting -----------------------------------------------------

def tiny_training_spec(epochs=1):
    """The example's training spec on a few hundred digits, narrower models, absolute data paths."""
    with open(os.path.join(EXAMPLE, 'training.json')) as f:
        spec = json.load(f)
    for definition in spec['initialize']['definitions']:
        name, body = definition['name'], definition['spec']
        if definition['group'] == 'datasets' and 'args' in body:
            body['args'] = [os.path.join(REPO, body['args'][0])]
            body['kwargs'] = {'limit': SIZES[name]}
        elif definition['group'] == 'datasets':
            body['kwargs']['size'] = SIZES[name]
        elif definition['group'] == 'data_loaders':
            body['kwargs']['batch_size'] = 32
        elif definition['group'] == 'models' and name != 'detach':
            body.setdefault('kwargs', {})['width'] = 16
    spec['train']['stages'][0]['stop_condition']['kwargs']['num_epochs'] = epochs
    return spec


@pytest.fixture
def project(tmp_path, monkeypatch):
    # One intra-op thread: on a shared 2-core machine torch's default threads wait on each other.
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    write_json(tmp_path / 'training.json', tiny_training_spec(epochs=2))
    for name in ('evaluation.json', 'inference.json'):
        with open(os.path.join(EXAMPLE, name)) as f:
            (tmp_path / name).write_text(f.read())
    return tmp_path


def check(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def pixels(path):
    """The grey levels of a PNG as a float tensor (height, width)."""
    with Image.open(path) as image:
        assert image.mode == 'L'
        return torch.from_numpy(numpy.array(image)).float()


def test_gan_end_to_end(project):
    check(run_script('init.py', 'training.json', cwd=project))
    out = check(run_script('train.py', 'pretrained_gan', cwd=project))
    assert 'Training stage 0 in progress' in out
    assert '  stage 0: no best epoch named: it trains 2 pipelines' in out and 'best val d_acc' not in out, \
        'a high discriminator accuracy is no sign of a good generator'
    with open(project / 'pretrained_gan' / 'metrics' / '0.csv') as f:
        rows = list(csv.reader(f))
    held_out = ['val d_acc', 'val D(real)', 'val D(fake)', 'val d_loss_real', 'val d_loss_fake', 'val g_loss']
    assert rows[0] == ['epoch'] + held_out
    assert [row[0] for row in rows[1:]] == ['1', '2']
    accuracy, real, fake, *losses = map(float, rows[2][1:])
    assert 0 <= accuracy <= 1 and 0 < real < 1 and 0 < fake < 1 and all(loss > 0 for loss in losses)

    # evaluation: the training pipelines and the held-out ones; the held-out half is the last row again
    out = check(run_script('evaluate.py', 'evaluation.json', cwd=project)).strip()
    names = ['d_acc', 'D(real)', 'D(fake)', 'd_loss_real', 'd_loss_fake', 'g_loss'] + held_out
    row = re.fullmatch(r'\[' + ', '.join(re.escape(n) + ' ' + f'({FLOAT})' for n in names) + r'\]', out)
    assert row, out
    assert [float(v) for v in row.groups()[6:]] == [round(float(v), 4) for v in rows[2][1:]]

    # inference: one PNG grid of the samples of the seeds given, 8 columns, each pixel 2x2; seed 1 twice
    seeds = [str(seed) for seed in range(1, 13)] + ['1']
    out = check(run_script('infer.py', 'inference.json', *seeds, cwd=project)).splitlines()
    assert out[0] == f'Running inference on:  {seeds}'
    assert out[1] == 'Wrote 13 generated digits to gan_samples.png (484x124 pixels)'
    grid = pixels(project / 'gan_samples.png')
    assert grid.shape == (124, 484)
    cells = [grid[2 * (2 + 30 * r):2 * (30 + 30 * r), 2 * (2 + 30 * c):2 * (30 + 30 * c)]
             for r in range(2) for c in range(8) if 8 * r + c < 13]
    assert all(cell.std() > 5 for cell in cells), 'a blank sample'
    assert len({tuple(cell.flatten().tolist()) for cell in cells[:12]}) == 12, 'seeds must give different samples'
    assert torch.equal(cells[12], cells[0]), 'the same seed must give the same sample anywhere in the batch'


# ---- which pipeline changes which model -----------------------------------------------------------

def staged_spec(*pipelines, variants=False):
    """The tiny spec with one one-epoch stage per pipeline named, each training that pipeline alone.
    With `variants`, two variants of the discriminator step in which the generator node *has* its
    optimizer: "discriminator_stepped" keeps the detach node, so only the detach keeps the
    discriminator's losses away from the generator; "discriminator_undetached" (the control) feeds
    the generator's output to the discriminator directly."""
    spec = tiny_training_spec()
    if variants:
        definitions = spec['initialize']['definitions']
        stepped = copy.deepcopy(next(d for d in definitions if d['name'] == 'make_fakes'))
        stepped['name'] = 'make_fakes_stepped'
        stepped['spec']['neural_graph'][0]['optimizer_name'] = 'generator_adam'
        undetached = copy.deepcopy(stepped)
        undetached['name'] = 'make_fakes_undetached'
        undetached['spec']['neural_graph'] = [{**stepped['spec']['neural_graph'][0], 'outputs': ['fake_detached']}]
        definitions += [stepped, undetached]
        pipelines_spec = spec['initialize']['pipelines']
        for name, fakes in (('stepped', 'make_fakes_stepped'), ('undetached', 'make_fakes_undetached')):
            definitions.append({'group': 'batch_graphs', 'name': f'discriminator_step_{name}', 'spec': {
                'nodes': [fakes, 'discriminate'], 'input_ports': ['digits', 'noise'],
                'ingoing_edges': {fakes: ['noise'], 'discriminate': ['digits', fakes]}}})
            pipelines_spec[f'discriminator_{name}'] = {**pipelines_spec['discriminator'],
                                                       'graph': f'discriminator_step_{name}'}
    one_epoch = {'class': 'EpochsCompleted', 'kwargs': {'num_epochs': 1}}
    spec['train'] = {'stages': [{'training_pipelines': [name], 'stop_condition': one_epoch} for name in pipelines]}
    return spec


def trained(folder, spec):
    """Init and train `spec` in `folder`; [(generator, discriminator) parameters after epoch N]."""
    write_json(folder / 'training.json', spec)
    check(run_script('init.py', 'training.json', cwd=folder))
    check(run_script('train.py', 'pretrained_gan', cwd=folder))
    epochs = range(len(spec['train']['stages']) + 1)
    return [(weights(folder / 'pretrained_gan', n, 'generator'), weights(folder / 'pretrained_gan', n, 'discriminator'))
            for n in epochs]


def weights(session, epoch, model):
    """The learned parameters of `model` after `epoch`. Batch-norm running statistics are left out:
    a frozen generator still runs in training mode in the discriminator step, so they move."""
    state = torch.load(session / 'checkpoints' / f'epoch_{epoch}.pt', weights_only=True)['models'][model]
    buffers = ('running_mean', 'running_var', 'num_batches_tracked')
    return {name: value for name, value in state.items() if not name.endswith(buffers)}


def same(first, second):
    return all(torch.equal(first[name], second[name]) for name in first)


def test_each_pipeline_changes_only_its_own_model(tmp_path, monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    (g0, d0), (g1, d1), (g2, d2) = trained(tmp_path, staged_spec('discriminator', 'generator'))
    # epoch 1, the discriminator pipeline: the generator is frozen there (and behind the detach)
    assert same(g0, g1) and not same(d0, d1)
    # epoch 2, the generator pipeline: the discriminator judges the fakes but is frozen
    assert same(d1, d2) and not same(g1, g2)


def test_detach_node_keeps_discriminator_losses_from_generator(tmp_path, monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    spec = staged_spec('discriminator_stepped', 'discriminator_undetached', variants=True)
    (g0, d0), (g1, d1), (g2, d2) = trained(tmp_path, spec)
    # epoch 1: the generator's optimizer steps in this pipeline, yet the detach leaves it no gradient
    assert same(g0, g1) and not same(d0, d1)
    # epoch 2, the control: without the detach the discriminator's losses do move the generator
    assert not same(g1, g2) and not same(d1, d2)
