"""Shipping a trained session (layer "ship", above assembly and report, below cli): `export` writes the
inference pipeline's models as safetensors, torch.export (.pt2) or ONNX files, each checked against the
pipeline before it is written; `serve` answers predictions over HTTP with batching."""
