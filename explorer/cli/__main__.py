"""``python -m explorer.cli`` runs the ``pruning-explorer`` command."""
import sys

from . import main

sys.exit(main())
