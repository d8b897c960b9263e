"""`python -m torchassistant.schema KIND`: the JSON Schemas live in `torchassistant.spec.schema`."""
from torchassistant.spec.schema import GROUPS, SCHEMAS, main  # noqa: F401

if __name__ == '__main__':
    main()
