"""Loggers: trainer-event listeners that record training in the session folder (through the store).

    "loggers": ["csv", "tensorboard"]      (training spec, under "train"; default ["csv"])

csv          metrics/<stage>.csv, rewritten from the stage's history whenever an epoch-end checkpoint
             is saved, so the CSV always matches the newest checkpoint
tensorboard  tensorboard/ event files: per-epoch scalars (every metric of the row, by stage), the
             learning rate of each optimizer, and the training loss of every batch
plots        plots/stage_N.png learning curves (as `torchassistant plot` draws them), redrawn after each
             epoch (implies csv, which they are drawn from)
mlflow       an MLflow run per session (`pip install "torchassistant[mlflow]"`, imported only when named):
             parameters (the --set overrides and every definition's args and kwargs), every metric of
             each epoch's row, the spec and the plots as artifacts. MLflow's own default tracking store
             unless MLFLOW_TRACKING_URI says otherwise; experiment "torchassistant" (MLFLOW_EXPERIMENT_NAME
             chooses another), a sweep's trials: experiment "sweep <study>". A resumed session goes on
             in the same run (its id: SESSION/mlflow.json).

Listeners run in the order of LOGGERS, so the CSV is written before the plots read it.
"""
import json
import os


class MetricsCSV:
    def __init__(self, store):
        self.store = store

    def on_checkpoint_saved(self, stage, progress, path):
        if progress.batch == 0:      # end of an epoch
            self.store.write_metrics(stage.index, progress.history[stage.index])


class TensorBoard:
    """Scalars for TensorBoard under SESSION/tensorboard: every metric of each epoch's row (tag
    "<stage>/<name>", step = epochs finished), each optimizer's learning rate ("lr/<optimizer>"), and
    each training batch's loss ("batch/<pipeline>/<loss>", step = training iterations so far). Batch
    losses stay on the device until the epoch ends: one host sync per epoch, not per batch."""

    def __init__(self, store, entities):
        try:
            from torch.utils.tensorboard import SummaryWriter  # imported only when asked for
        except ImportError as e:
            from torchassistant.core.errors import UsageError
            raise UsageError('the "tensorboard" logger (train.loggers) needs the tensorboard package: '
                             'pip install tensorboard (or pip install "torchassistant[tensorboard]")') from e
        self.writer = SummaryWriter(log_dir=store.folder('tensorboard'))
        self.entities = entities
        self.before = 0           # training iterations of the finished epochs
        self.pending = []

    def on_training_start(self, trainer, progress):
        per_epoch = {stage.index: sum(p.num_batches() for p in stage.training) for stage in trainer.stages}
        self.before = sum(per_epoch.get(index, 0) * len(rows) for index, rows in progress.history.items())

    def on_epoch_start(self, stage, epoch, total):
        self.total = total

    def on_batch_end(self, done, read_values, meters):
        for use, meter in zip(meters.pipeline.losses, meters.losses):
            self.pending.append((f'batch/{meters.pipeline.name}/{use.display_name}', meter.last, self.before + done))

    def on_epoch_end(self, stage, epoch, row, progress):
        self.before += self.total
        self._write_batches()
        for name, value in row.items():
            self.writer.add_scalar(f'stage {stage.index}/{name}', value, progress.epoch)
        for name, record in self.entities.optimizers.items():
            for i, group in enumerate(record.optimizer.param_groups):
                suffix = f' group {i}' if len(record.optimizer.param_groups) > 1 else ''
                self.writer.add_scalar(f'lr/{name}{suffix}', group['lr'], progress.epoch)
        self.writer.flush()

    def _write_batches(self):
        if not self.pending:
            return
        import torch
        values = torch.stack([v.detach().float().reshape(()) for _, v, _ in self.pending]).tolist()
        for (tag, _, step), value in zip(self.pending, values):
            self.writer.add_scalar(tag, value, step)
        self.pending = []

    def on_training_end(self, progress, seconds):
        self.writer.close()


class Plots:
    def __init__(self, store):
        self.store = store

    def on_checkpoint_saved(self, stage, progress, path):
        if progress.batch == 0:
            from torchassistant.report import plots  # matplotlib: only when asked for
            plots.write(self.store.path)


class MLflow:
    PARAM_LIMIT = 500          # characters of a parameter's value (MLflow refuses long ones)

    def __init__(self, store, entities):
        try:
            from mlflow.tracking import MlflowClient  # imported only when asked for
        except ImportError as e:
            from torchassistant.core.errors import UsageError
            raise UsageError('the "mlflow" logger (train.loggers) needs MLflow: pip install mlflow-skinny '
                             '(or pip install "torchassistant[mlflow]")') from e
        self.store = store
        self.client = MlflowClient()
        self.run_id = None

    def on_training_start(self, trainer, progress):
        record = self.store.read_record('mlflow.json') or {}
        run = None
        if record.get('run_id'):
            try:
                run = self.client.get_run(record['run_id'])
            except Exception:         # another tracking store than the run was made in: a new run
                run = None
        if run is None:
            run = self.client.create_run(self._experiment(), run_name=self.store.path,
                                         tags={'torchassistant.session': os.path.abspath(self.store.path)})
            self.store.write_record('mlflow.json', {'run_id': run.info.run_id,
                                                    'tracking_uri': self.client.tracking_uri})
            self._log_params(run.info.run_id)
            self.client.log_artifact(run.info.run_id, self.store.spec_file())
        else:
            self.client.update_run(run.info.run_id, status='RUNNING')
        self.run_id = run.info.run_id

    def _experiment(self):
        name = os.environ.get('MLFLOW_EXPERIMENT_NAME') or 'torchassistant'
        trials = os.path.dirname(os.path.abspath(self.store.path))
        record = os.path.join(os.path.dirname(trials), 'sweep.json')
        if os.path.basename(trials) == 'trials' and os.path.isfile(record):
            with open(record) as f:
                name = f'sweep {json.load(f).get("study_name")}'
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else self.client.create_experiment(name)

    def _log_params(self, run_id):
        from mlflow.entities import Param
        spec = self.store.expanded_spec()
        overrides = self.store.overrides()
        if spec is None:
            from torchassistant.spec import loader
            from torchassistant.spec import overrides as spec_overrides
            spec = loader.load_file(self.store.spec_file()).data
            spec = spec_overrides.apply_to_data(spec, overrides) if overrides else spec
        params = {f'set {o.split("=", 1)[0].lstrip("+~")}': o.split('=', 1)[-1] for o in overrides}
        for definition in spec.get('initialize', {}).get('definitions', []):
            inner = definition.get('spec', {})
            for key in ('class', 'factory_fn'):
                if key in inner:
                    params[f'{definition["name"]}.{key}'] = inner[key]
            for i, value in enumerate(inner.get('args', [])):
                params[f'{definition["name"]}.args.{i}'] = value
            for key, value in inner.get('kwargs', {}).items():
                params[f'{definition["name"]}.{key}'] = value
        batch = [Param(k[:250], json.dumps(v) if not isinstance(v, str) else v)
                 for k, v in params.items()]
        batch = [Param(p.key, p.value[:self.PARAM_LIMIT]) for p in batch]
        for start in range(0, len(batch), 100):
            self.client.log_batch(run_id, params=batch[start:start + 100])

    def on_epoch_end(self, stage, epoch, row, progress):
        import math
        import time

        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(name, float(value), now, progress.epoch) for name, value in row.items()
                   if isinstance(value, (int, float)) and math.isfinite(value)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def on_training_end(self, progress, seconds):
        plots = os.path.join(self.store.path, 'plots')
        if os.path.isdir(plots):
            self.client.log_artifacts(self.run_id, plots, 'plots')
        self.client.set_terminated(self.run_id, 'FINISHED')


LOGGERS = {'csv': lambda store, entities: MetricsCSV(store), 'tensorboard': TensorBoard,
           'plots': lambda store, entities: Plots(store), 'mlflow': MLflow}
