"""Phase (b), the matcher: :class:`Gallery`, vectorised, no early exit.

Never imports :mod:`fr_pbd.capture` (phase a). See :mod:`fr_pbd.match.gallery`.
"""

from fr_pbd.match.gallery import Gallery

__all__ = ["Gallery"]
