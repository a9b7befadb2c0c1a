"""Entry point for ``python -m awq_ext``."""
import sys

from awq_ext.cli import main

if __name__ == "__main__":
    sys.exit(main())
