"""Benchmarks: TorchAssistant against the equivalent hand-written PyTorch (see README.md)."""
