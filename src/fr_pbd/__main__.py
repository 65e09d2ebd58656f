"""``python -m fr_pbd ...``: the same as ``fr-pbd ...``."""

import sys

from fr_pbd.cli import main

sys.exit(main())
