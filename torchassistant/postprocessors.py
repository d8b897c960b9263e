"""Post-processors for inference specs: called with the dict of results, they return the dict that is
printed (`infer`), written as JSON (`infer --json`) and answered (`serve`).

    "post_processor": {"class": "torchassistant.postprocessors.Classification",
                       "kwargs": {"top_k": 3, "classes": "test_ds"}}

Like every post-processor, its first argument is the session (the built definitions), given by the
framework; the spec gives the rest.
"""
import torch


class Classification:
    """Class scores -> readable predictions, one per example:

        label        the most probable class (its name, or its index without names)
        probability  that class's probability
        top          the `top_k` most probable classes, [{"label": ..., "probability": ...}, ...]

    `scores`: the result holding the scores, B x C (default "y_hat"); `logits`: true (default) when
    they are logits (a softmax makes them probabilities), false when they are probabilities already.
    `classes`: the class names, as a list (index i names class i), or the name of a dataset definition
    whose `classes` attribute lists them (torchvision's datasets have one), or None: labels are the
    indices. `decimals`: probabilities are rounded to this many (None: as computed). With `raw`, the
    results it was given are kept beside its own (the raw scores as tensors)."""

    def __init__(self, session, scores='y_hat', top_k=3, classes=None, logits=True, decimals=4, raw=False):
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f'top_k must be an integer >= 1, not {top_k!r}')
        self.scores, self.top_k, self.logits, self.decimals, self.raw = scores, top_k, logits, decimals, raw
        self.classes = _class_names(session, classes)

    def __call__(self, results):
        if self.scores not in results:
            raise KeyError(f'Classification reads the scores from result "{self.scores}", and there is none; '
                           f'the results are: {", ".join(results)} (name one with "scores")')
        scores = torch.as_tensor(results[self.scores]).detach()
        if scores.dim() != 2:
            raise ValueError(f'Classification takes scores of shape (batch, classes); result "{self.scores}" '
                             f'has shape {tuple(scores.shape)}')
        if self.classes is not None and scores.shape[1] != len(self.classes):
            raise ValueError(f'result "{self.scores}" has {scores.shape[1]} scores per example but '
                             f'{len(self.classes)} class names were given')
        probabilities = scores.float().softmax(dim=1) if self.logits else scores.float()
        top = probabilities.topk(min(self.top_k, scores.shape[1]), dim=1)
        values, indices = top.values.cpu().tolist(), top.indices.cpu().tolist()
        ranked = [[{'label': self._label(i), 'probability': self._rounded(p)} for i, p in zip(row, chances)]
                  for row, chances in zip(indices, values)]
        readable = {'label': [row[0]['label'] for row in ranked],
                    'probability': [row[0]['probability'] for row in ranked],
                    'top': ranked}
        return {**results, **readable} if self.raw else readable

    def _label(self, index):
        return index if self.classes is None else self.classes[index]

    def _rounded(self, probability):
        return probability if self.decimals is None else round(probability, self.decimals)


def _class_names(session, classes):
    """The list of class names `classes` stands for (see Classification), or None."""
    if classes is None:
        return None
    if isinstance(classes, str):
        dataset = session.dataset(classes)
        while not hasattr(dataset, 'classes') and hasattr(dataset, 'dataset'):     # slices, preprocessed links
            dataset = dataset.dataset
        if not hasattr(dataset, 'classes'):
            raise ValueError(f'dataset "{classes}" ({type(dataset).__name__}) has no "classes" attribute to take '
                             f'the class names from; give them as a list instead')
        classes = dataset.classes
    names = list(classes)
    if not names:
        raise ValueError('classes is empty; give one name per class, or leave it out for class indices')
    return [name if isinstance(name, (str, int, float)) else str(name) for name in names]
