"""What runs on a batch: batch processors (models run in order) and batch graphs of them.

A *frame* is a dict of named variables (`input_1`, `y_hat`...). A batch processor takes a frame and
returns it extended with its nodes' outputs; a batch graph routes frames from its input ports through
its batch processors in topological order and returns every node's resulting frame. In inference mode
(`graph(frames, inference=True)`, what infer runs) a model that defines `run_inference(*inputs)` is
called through it instead of `forward`: e.g. a decoder that feeds back its own predictions.
"""
from dataclasses import dataclass
from typing import Optional

import torch

from torchassistant.run.data import describe, to_device
from torchassistant.spec import rules
from torchassistant.spec.rules import topological_order


class StepError(Exception):
    """User code failed inside a batch processor; `where` names the node, `received` its inputs."""

    def __init__(self, where, received, original):
        super().__init__(f'{where}: {type(original).__name__}: {original}')
        self.where = where
        self.received = received
        self.original = original


@dataclass
class Node:
    model_name: str
    model: torch.nn.Module
    inputs: list
    outputs: list
    optimizer_name: Optional[str] = None
    optimizer: object = None
    where: str = ''          # spec location of the model's definition, for messages


class BatchProcessor:
    def __init__(self, name, nodes, input_adapter=None, output_adapter=None, device=None, session_device=None):
        self.name = name
        self.nodes = nodes
        self.input_adapter = input_adapter
        self.output_adapter = output_adapter
        self.device = torch.device(device) if device else None
        # what an input adapter makes (the original's translation example: a zero hidden state on the CPU)
        # goes where the models are; the frame is there already
        self.adapted_to = self.device or (torch.device(session_device) if session_device else None)

    def __call__(self, frame, inference=False):
        variables = dict(frame)
        adapted = self._adapt('input adapter', self.input_adapter, frame) if self.input_adapter else None
        if adapted is not None and self.adapted_to is not None:
            adapted = {model: to_device(values, self.adapted_to) for model, values in adapted.items()}
        outputs = {}
        for node in self.nodes:
            given = adapted.get(node.model_name, {}) if adapted else {}
            args = [given[name] if name in given else variables[name] for name in node.inputs]
            if self.device is not None:
                args = [to_device(a, self.device) for a in args]
            run = getattr(node.model, 'run_inference', node.model) if inference else node.model
            try:
                result = run(*args)
            except Exception as e:
                received = {name: describe(value) for name, value in zip(node.inputs, args)}
                raise StepError(f'model "{node.model_name}" ({node.where}) in batch processor "{self.name}"',
                                received, e) from e
            if isinstance(result, torch.Tensor):
                result = (result,)
            named = dict(zip(node.outputs, result))
            variables.update(named)
            outputs.update(named)
        if self.output_adapter is not None:
            # the adapter sees the frame and the outputs; what it returns replaces those names (the
            # original's translation example drops <start> from its targets there)
            outputs = self._adapt('output adapter', self.output_adapter, {**frame, **outputs})
        return {**frame, **outputs}

    def _adapt(self, which, adapter, values):
        try:
            return adapter(values)
        except Exception as e:
            received = {name: describe(value) for name, value in values.items()}
            raise StepError(f'the {which} ({type(adapter).__name__}) of batch processor "{self.name}"',
                            received, e) from e

    def models(self):
        return [node.model for node in self.nodes]

    def optimizers(self):
        """(optimizer name, torch optimizer) of the trainable nodes."""
        return [(node.optimizer_name, node.optimizer) for node in self.nodes if node.optimizer is not None]


class BatchGraph:
    """Batch processors fed by input ports and by each other, run in topological order."""

    def __init__(self, name, processors, input_ports, ingoing_edges):
        self.name = name
        self.input_ports = list(input_ports)
        self.order = [(node, processors[node], list(ingoing_edges.get(node, ())))
                      for node in topological_order(list(processors), ingoing_edges)]

    def __call__(self, port_frames, inference=False):
        results = {}
        for name, processor, sources in self.order:
            frame = {}
            for source in sources:
                frame.update(port_frames[source] if source in port_frames else results[source])
            results[name] = processor(frame, inference)
        return results

    def processors(self):
        return [processor for _, processor, _ in self.order]

    def node_names(self):
        return [name for name, _, _ in self.order]


def single_model_graph(model_name, model, optimizer_name=None, optimizer=None, where=''):
    """The graph a spec with one model gets: the model reads `input_1`, its first output is `y_hat`
    (the rule and its names live in spec.rules)."""
    node = Node(model_name, model, [rules.LONE_MODEL_INPUT], [rules.LONE_MODEL_OUTPUT], optimizer_name, optimizer,
                where)
    return single_processor_graph(model_name, BatchProcessor(model_name, [node]))


def single_processor_graph(name, processor):
    port = rules.DEFAULT_PORT
    return BatchGraph(name, {name: processor}, [port], {name: [port]})
