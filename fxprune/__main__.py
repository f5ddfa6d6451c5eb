"""``python -m fxprune`` runs the command line (see :mod:`fxprune.cli`)."""
import sys

from .cli import main

sys.exit(main())
