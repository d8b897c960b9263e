"""The command-line layer (top): argument parsing, the commands as functions, hints, exit codes.

May import every layer below. `main` is the console command; `init_main` ... `infer_main` are the root
scripts (`python init.py`, ...)."""
from torchassistant.cli.main import evaluate_main, infer_main, init_main, main, schema_main, train_main

__all__ = ['main', 'init_main', 'train_main', 'evaluate_main', 'infer_main', 'schema_main']
