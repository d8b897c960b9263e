"""python init.py --help"""
import sys

from torchassistant.cli import init_main

if __name__ == '__main__':
    sys.exit(init_main())
