"""``python -m plugin_client``: the ``plugin-client`` command line (see :mod:`plugin_client.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
