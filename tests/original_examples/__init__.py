"""Equivalents of the original TorchAssistant's concise examples at its HEAD (see README.md)."""
