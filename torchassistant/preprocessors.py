"""Preprocessors transform one element of each example; learnable ones are fitted once, at init."""


class ValuePreprocessor:
    """Base class for preprocessors.

    Override `process(value)`; override `fit(dataset)` to learn from a dataset (called once, at
    `init`). The fitted state stored in the session is `state_dict()`, by default the instance's
    attributes, so subclasses that keep their state in plain attributes need nothing more.
    """

    def fit(self, dataset):
        pass

    def process(self, value):
        return value

    def state_dict(self):
        return dict(vars(self))

    def load_state_dict(self, state):
        vars(self).update(state)
