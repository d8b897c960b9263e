"""The shape of the original's translation example (at 9c43f07), in our own code: an encoder and a
decoder as two models with two optimizers in one batch processor, an input adapter made by a factory
that pads the targets with `torchassistant.utils.pad_sequences`, an output adapter that rewrites a
frame variable, collators made by factories, evaluation and inference specs that override definitions
(a class over a factory_fn, a node's inputs, a collator) and an inference spec without its pipeline,
with a top-level input adapter and the original's port name "default_port"."""
