"""``python -m fr_pbd.audit --home H [--socket S] [--eval R] --out DIR``."""

import sys

from fr_pbd.audit import main

sys.exit(main())
