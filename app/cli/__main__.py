"""``python -m app.cli ...``: the ``modelmon`` command without its console script."""

import sys

from app.cli import main

if __name__ == "__main__":  # not when a worker process imports it
    sys.exit(main())
