"""fr-pbd: privacy-by-design, on-device face verification.

Phase (a), capture -> template: :mod:`fr_pbd.capture`.
Phase (b), template -> match: :mod:`fr_pbd.store` (encryption at rest) and
:mod:`fr_pbd.match` (the matcher).
"""

__version__ = "0.1.0"
