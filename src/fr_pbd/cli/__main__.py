"""``python -m fr_pbd.cli ...``: the same as ``fr-pbd ...``."""

import sys

from fr_pbd.cli import main

sys.exit(main())
