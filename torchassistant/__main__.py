"""`python -m torchassistant COMMAND ...`: the same as the `torchassistant` console command."""
import sys

from torchassistant.cli import main

if __name__ == '__main__':
    sys.exit(main(prog='python -m torchassistant'))
