"""`torchassistant export`: the tutorial session in all three formats, each file loaded back as another
program would (safetensors into the model class, torch.export.load, onnxruntime) and compared with what
`infer --json` answers on 256 test digits; the GAN's two models; seq2seq's data-dependent decoder and
packed encoder refused with a clear message (and their weights exported); an untraceable model: one
paragraph, exit 1, no file."""
import hashlib
import json
import os
import re
import sys

import forked
import numpy
import pytest
import torch
from conftest import REPO, write_json
from PIL import Image
from torchvision.transforms.functional import to_tensor

from examples.mnist import LeNet5

pytestmark = pytest.mark.e2e

# several commands of the console in one process: one torch import instead of one per command
RUNNER = '''
import contextlib, io, json, sys
from torchassistant.cli import main
done = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    done.append([code, out.getvalue(), err.getvalue()])
sys.__stdout__.write(json.dumps(done))
'''
DIFF = re.compile(r'checked with (.+) against the pipeline on (\d+) examples .*: max abs diff (\S+) \(tolerance (\S+)\)')


def commands(root, *argvs, env=None):
    """[(exit status, stdout, stderr)] of `torchassistant ARGV` for each argv, run in order in one process."""
    env = dict(env or os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''), OMP_NUM_THREADS='1')
    done = forked.run([sys.executable, '-c', RUNNER, json.dumps([list(map(str, a)) for a in argvs])], cwd=root,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def ok(result):
    code, out, err = result
    assert code == 0, out + err
    assert 'Traceback' not in err, err
    return out


def checked(out):
    """(checker, examples, max abs diff, tolerance) of each file the export wrote."""
    found = [(m.group(1), int(m.group(2)), float(m.group(3)), float(m.group(4))) for m in DIFF.finditer(out)]
    assert found, out
    for _, _, difference, tolerance in found:
        assert difference <= tolerance, out
    return found


def images(shipped, count):
    """The first `count` test digits as the tutorial's collator makes them: B x 1 x 28 x 28 in [0, 1]."""
    return torch.stack([to_tensor(Image.open(os.path.join(shipped.root, path))) for path in shipped.images[:count]])


def infer_scores(shipped, count):
    return torch.tensor([answer['y_hat'] for answer in shipped.answers[:count]])


def test_the_tutorial_session_in_three_formats_gives_infers_predictions(shipped):
    out = os.path.join(shipped.root, 'exported')
    results = commands(shipped.root, *[['export', shipped.spec, '--format', fmt] for fmt in ('safetensors',
                                                                                             'torch-export')],
                       ['export', shipped.spec, '--format', 'onnx', '--checkpoint', '1', '--out', f'{out}/lenet.onnx'])
    outputs = [ok(r) for r in results]
    for text, (path, checker) in zip(outputs, (('pretrained/exports/LeNet5.safetensors', 'a copy of the model'),
                                               ('pretrained/exports/LeNet5.pt2', 'torch.export.load'),
                                               (f'{out}/lenet.onnx', 'onnxruntime'))):
        assert text.startswith(f'wrote {path} (model "LeNet5": ') and \
            'input_1 (batch x 1 x 28 x 28) -> y_hat (batch x 10))\n' in text, text
        (who, examples, _, _), = checked(text)
        assert who.startswith(checker) and examples == 256, text
    x, expected = images(shipped, 256), infer_scores(shipped, 256)
    session = os.path.join(shipped.root, 'pretrained')

    from safetensors import safe_open
    from safetensors.torch import load_file
    model = LeNet5().eval()
    model.load_state_dict(load_file(os.path.join(session, 'exports', 'LeNet5.safetensors')))
    with torch.no_grad():
        assert (model(x)[0] - expected).abs().max() <= 1e-5
    with safe_open(os.path.join(session, 'exports', 'LeNet5.safetensors'), 'pt') as f:
        metadata = f.metadata()
    with open(os.path.join(session, 'spec.json'), 'rb') as f:
        assert metadata['spec_sha256'] == hashlib.sha256(f.read()).hexdigest()
    assert (metadata['epoch'], metadata['model'], metadata['pipeline']) == ('1', 'LeNet5', 'evaluation_pipeline')
    assert metadata['class'] == 'my_examples.mnist.LeNet5' and metadata['session'] == 'pretrained'

    extra = {'torchassistant.json': ''}
    program = torch.export.load(os.path.join(session, 'exports', 'LeNet5.pt2'), extra_files=extra).module()
    assert json.loads(extra['torchassistant.json'])['epoch'] == '1'
    with torch.no_grad():
        assert (program(x)[0] - expected).abs().max() <= 1e-5
        assert (program(x[:1])[0] - expected[:1]).abs().max() <= 1e-5            # the batch dimension is dynamic
        assert (program(x[:7])[0] - expected[:7]).abs().max() <= 1e-5

    import onnxruntime
    onnx = onnxruntime.InferenceSession(f'{out}/lenet.onnx', providers=['CPUExecutionProvider'])
    assert [(i.name, i.shape[1:]) for i in onnx.get_inputs()] == [('input_1', [1, 28, 28])]
    assert [o.name for o in onnx.get_outputs()] == ['y_hat']
    scores, = onnx.run(None, {'input_1': x.numpy()})
    assert numpy.abs(scores - expected.numpy()).max() <= 1e-4
    assert onnx.get_modelmeta().custom_metadata_map['checkpoint'] == '1'
    assert os.listdir(out) == ['lenet.onnx']          # written through a temporary file, renamed


UNTRACEABLE = '''
from my_examples.mnist import LeNet5


class Moody(LeNet5):
    def forward(self, x):
        if x.mean() > 0.5:
            return [-super().forward(x)[0]]
        return super().forward(x)
'''


def test_an_untraceable_model_is_one_paragraph_naming_it_exit_1_and_no_file(shipped, tmp_path):
    with open(os.path.join(shipped.root, 'my_examples', 'moody.py'), 'w') as f:
        f.write(UNTRACEABLE)
    with open(os.path.join(shipped.root, shipped.spec)) as f:
        spec = json.load(f)
    model = {'group': 'models', 'name': 'LeNet5', 'spec': {'class': 'my_examples.moody.Moody'}}
    write_json(tmp_path / 'moody.json', {**spec, 'initialize': {'definitions': {
        'options': [model], 'replace_strategy': 'override', 'override_key': ['group', 'name']}}})
    out = tmp_path / 'out'
    (code, stdout, stderr), = commands(shipped.root, ['export', tmp_path / 'moody.json', '--format', 'torch-export',
                                                      '--out', out])
    assert code == 1, stdout + stderr
    assert stderr.startswith('error: model "LeNet5" (') and stderr.count('\n') == 1, stderr
    assert 'cannot be exported with torch.export: GuardOnDataDependentSymNode' in stderr
    assert 'my_examples/moody.py:7 in forward: if x.mean() > 0.5:' in stderr
    assert 'branches on the values of its tensors' in stderr and 'Traceback' not in stderr
    assert os.listdir(out) == []


def test_bad_export_command_lines_exit_2(shipped):
    results = commands(shipped.root, ['export', shipped.spec, '--format', 'tflite'],
                       ['export', shipped.spec, '--format', 'onnx', '--checkpoint', 'newest'],
                       ['export', shipped.spec, '--format', 'onnx', '--checkpoint', '7'])
    for (code, out, err), says in zip(results, ("invalid choice: 'tflite'", "not 'newest'",
                                                '--checkpoint: session "pretrained" has no checkpoint of epoch 7')):
        assert code == 2 and err.startswith('error: ') and says in err and 'Traceback' not in err, err


def test_the_gans_two_models_are_exported_and_give_infers_fakes(tmp_path):
    from test_example_gan import EXAMPLE, tiny_training_spec

    from examples.gan import latent_vector
    write_json(tmp_path / 'training.json', tiny_training_spec())
    with open(os.path.join(EXAMPLE, 'inference.json')) as f:
        (tmp_path / 'inference.json').write_text(f.read())
    init, export, infer = commands(tmp_path, ['init', 'training.json'],
                                   ['export', 'inference.json', '--format', 'torch-export'],
                                   ['infer', '--json', 'inference.json', '3', '5'])
    ok(init)
    text = ok(export)
    assert [c[0] for c in checked(text)] == ['torch.export.load'] * 2
    assert 'note: pipeline "generator" runs 2 models (generator, discriminator); each is a file of its own' in text
    folder = tmp_path / 'pretrained_gan' / 'exports'
    assert sorted(os.listdir(folder)) == ['discriminator.pt2', 'generator.pt2']
    fakes = torch.tensor([json.loads(line)['fake'] for line in ok(infer).splitlines()])
    generator = torch.export.load(folder / 'generator.pt2').module()
    discriminator = torch.export.load(folder / 'discriminator.pt2').module()
    with torch.no_grad():
        made, = generator(torch.stack([latent_vector(3, 32), latent_vector(5, 32)]))
        assert (made - fakes).abs().max() <= 1e-5
        assert discriminator(made)[0].shape == (2,)


def test_seq2seq_says_which_models_cannot_be_traced_and_why_and_exports_their_weights(tmp_path):
    from test_example_seq2seq import EXAMPLE, tiny_training_spec

    from examples.seq2seq import Decoder, Encoder
    write_json(tmp_path / 'training.json', tiny_training_spec())
    with open(os.path.join(EXAMPLE, 'inference.json')) as f:
        (tmp_path / 'inference.json').write_text(f.read())
    init, traced, weights = commands(tmp_path, ['init', 'training.json'],
                                     ['export', 'inference.json', '--format', 'torch-export'],
                                     ['export', 'inference.json', '--format', 'safetensors'])
    ok(init)
    code, out, err = traced
    assert code == 1 and out == '' and 'Traceback' not in err, out + err
    encoder, decoder, summary = err.splitlines()
    assert encoder.startswith('error: model "encoder" (') and 'cannot be exported with torch.export: ' in encoder
    assert 'in forward: outputs, final = self.gru(packed)' in encoder and 'pack_padded_sequence' in encoder
    assert decoder.startswith('model "decoder" (') and 'GuardOnDataDependentSymNode' in decoder
    assert 'in forward: if finished.all():' in decoder and 'decoding until every sequence has ended' in decoder
    assert summary == '(0 of 2 models of pipeline "validation" exported)'
    text = ok(weights)
    assert [c[2] for c in checked(text)] == [0.0, 0.0]
    folder = tmp_path / 'seq2seq_pretrained' / 'exports'
    assert sorted(os.listdir(folder)) == ['decoder.safetensors', 'encoder.safetensors']    # no .pt2

    from safetensors.torch import load_file
    for cls, name in ((Encoder, 'encoder'), (Decoder, 'decoder')):
        state = load_file(folder / f'{name}.safetensors')
        model = cls(state['embedding.weight'].shape[0], 32, 64)
        model.load_state_dict(state)            # every tensor there, of the right shape
