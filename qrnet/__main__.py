"""Runs the `qrnet` command line: `python -m qrnet --help`."""

import sys

from qrnet.cli import main

sys.exit(main())
