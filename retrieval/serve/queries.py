"""What counts as a query: the rule that refuses text with nothing in it to search.

A query is *blank* when none of its characters can carry meaning to a retriever: it holds only
whitespace and separators (``str.isspace``, Unicode Z*), control characters (Cc, NUL included),
format characters (Cf: zero-width space, BOM, soft hyphen), combining marks standing alone (Mn, Me:
uncased BERT tokenizers strip them) and U+FFFD. BM25 finds nothing for such a query, but a
learned retriever encodes it as ``[CLS] [SEP]`` and returns whatever documents sit nearest that,
so the service refuses it (422) instead of answering arbitrary hits. Stop words, emoji and
unknown scripts are not blank: they are text, and what a retriever makes of them is its business.

The rule lives here, next to the HTTP schema that applies it; it is a plain function over a
string so that the library's Searcher can apply the same one.
"""

from __future__ import annotations

import unicodedata

# Unicode general categories that carry nothing to search.
NOTHING_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Mn", "Me"})

BLANK_QUERY_MESSAGE = "must contain a visible character (it holds only whitespace, control, format or combining characters)"


def is_blank_query(text: str) -> bool:
    """True when ``text`` has no character a retriever could search for (the empty string included)."""
    for ch in text:
        if ch.isspace() or ch == "\ufffd":
            continue
        if unicodedata.category(ch) not in NOTHING_CATEGORIES:
            return False
    return True
