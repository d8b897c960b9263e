"""What concise-spec expansion asks of the data: the data part built as building builds it.

`spec.concise` decides which definitions to fill in from the answers (lengths, example 0, the
preprocessors a dataset was made with); this module is where those answers come from, so the spec
layer never builds anything itself. Splits are drawn and preprocessors fitted into the session's
`LearnedState` (or restored from it), exactly as `build.build` does later.
"""
import torch

from torchassistant.assembly import build
from torchassistant.run.data import preprocessors_of


class DataProbe:
    def __init__(self, learned):
        self.learned = learned
        self._entities = None

    def build(self, view):
        """Build the data definitions of `view` (a located Document of the data part so far)."""
        self._entities = build.build(view, self.learned, torch.device('cpu'))

    def length(self, name):
        return len(self._entities.dataset(name))

    def example(self, name, index=0):
        return self._entities.dataset(name)[index]

    def preprocessors(self, name):
        """The preprocessor layers dataset `name` was made through, outermost first."""
        return preprocessors_of(self._entities.dataset(name))
