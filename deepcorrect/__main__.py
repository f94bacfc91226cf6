"""`python -m deepcorrect`."""

import sys

from deepcorrect.cli import main

sys.exit(main())
