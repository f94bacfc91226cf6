"""`python -m distort`."""

import sys

from distort.cli import main

sys.exit(main())
