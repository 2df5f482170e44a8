"""``python -m climit``: the same command line as the ``climit`` console script."""

import sys

from climit.cli import main

if __name__ == "__main__":
    sys.exit(main())
