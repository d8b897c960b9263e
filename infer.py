"""python infer.py --help"""
import sys

from torchassistant.cli import infer_main

if __name__ == '__main__':
    sys.exit(infer_main())
