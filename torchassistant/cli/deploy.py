"""`export` and `serve` as functions: open the inference spec's pipeline as infer does, then hand it to
`torchassistant.ship`. No argument parsing here (see `torchassistant.cli.main`)."""
import os

from torchassistant.cli import commands
from torchassistant.core.errors import UsageError


def _opened(spec_path, options, checkpoint):
    """(document, session, inference.Inference) of the inference spec at `spec_path`."""
    document = commands.load_spec(spec_path, 'inference')
    session, runner = commands.open_inference(document, options, checkpoint)
    return document, session, runner


def _which(document, checkpoint):
    which = checkpoint if checkpoint is not None else document.data.get('checkpoint', 'latest')
    return str(which)


def export(spec_path, fmt, checkpoint=None, out=None, stream=None):
    """Export the models of the inference spec's pipeline as `fmt` (see torchassistant.ship.export), on
    the CPU: the files then run anywhere. Returns the paths written."""
    from torchassistant.ship import export as exporting
    if fmt not in exporting.FORMATS:
        raise UsageError(f'no export format "{fmt}"; the formats: {", ".join(exporting.FORMATS)}')
    exporting.check_installed(fmt)           # before the session is opened: a missing library is said at once
    document, session, runner = _opened(spec_path, commands.RunOptions(device='cpu'), checkpoint)
    source = exporting.Source(session=session.store.path, epoch=session.epoch, checkpoint=_which(document, checkpoint),
                              pipeline=runner.pipeline.name,
                              spec_sha256=exporting.spec_digest(session.store.spec_file()),
                              inference_spec=os.path.abspath(spec_path))
    return exporting.export(runner.pipeline, source, fmt, out, session.store, stream)


def serve(spec_path, host='127.0.0.1', port=8000, max_batch=64, max_wait_ms=5.0, max_body=None, checkpoint=None,
          options=None, stream=None):
    """Answer predictions over HTTP until SIGTERM or Ctrl+C (see torchassistant.ship.serve)."""
    from torchassistant.ship import serve as serving
    serving.check_installed()
    settings = serving.Settings(host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms,
                                max_body=serving.DEFAULT_MAX_BODY if max_body is None else max_body)
    settings.check()
    document, session, runner = _opened(spec_path, options, checkpoint)
    about = {'session': session.store.path, 'pipeline': runner.pipeline.name, 'epoch': session.epoch,
             'checkpoint': _which(document, checkpoint), 'device': str(session.device),
             'precision': session.precision.name, 'inference_spec': spec_path}
    return serving.serve(runner, about, settings, stream)
