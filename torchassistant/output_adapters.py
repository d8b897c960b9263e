"""Output adapters map the dict of a batch processor's outputs to a new dict."""


class SelectVariables:
    """Keep only the named variables."""

    def __init__(self, variable_names):
        self.variable_names = list(variable_names)

    def __call__(self, outputs):
        return {name: outputs[name] for name in self.variable_names}
