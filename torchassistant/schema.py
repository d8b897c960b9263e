"""`python -m torchassistant.schema KIND`: print the JSON Schema of a spec format (an entry point, like
the root scripts; the schemas themselves live in `torchassistant.spec.schema`)."""
import sys

from torchassistant.spec.schema import GROUPS, SCHEMAS  # noqa: F401  (the names users import from here)


def main(argv=None):
    """Print a schema; a closed pipe (`| head`) ends quietly."""
    from torchassistant.cli.main import schema_main  # the one place errors become exit codes
    sys.exit(schema_main(argv))


if __name__ == '__main__':
    main()
