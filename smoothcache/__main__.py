"""``python -m smoothcache``: the same command line as the ``smoothcache`` console script."""

import sys

from smoothcache.cli import main

if __name__ == "__main__":
    sys.exit(main())
