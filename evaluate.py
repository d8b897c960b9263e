"""python evaluate.py --help"""
import sys

from torchassistant.cli import evaluate_main

if __name__ == '__main__':
    sys.exit(evaluate_main())
