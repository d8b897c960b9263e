"""python train.py --help"""
import sys

from torchassistant.cli import train_main

if __name__ == '__main__':
    sys.exit(train_main())
