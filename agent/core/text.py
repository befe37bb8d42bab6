"""Text as people compare it: case and accents set aside."""

from __future__ import annotations

import unicodedata


def fold(text: str) -> str:
    """`text` case-folded with its accents dropped (É → e, ç → c, ß → ss): the same on
    every machine, unlike the process locale's `strxfrm`."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))
