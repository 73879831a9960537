"""Secrets out of everything copycat writes: credentials in URLs are replaced by ``***``.

An oracle URL may carry a password (``user:pass@``) or a key in its query (``?api_key=``,
``?key=``, ``?token=``); config.json, logs, report.md and error messages show it redacted.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote_plus, urlsplit, urlunsplit

MASK = "***"
# query parameters whose value is a credential (compared lower-case, '-' read as '_')
SECRET_PARAMS = frozenset(
    {
        "api_key",
        "apikey",
        "key",
        "token",
        "access_token",
        "auth",
        "password",
        "secret",
        "sig",
        "signature",
        "x_api_key",
        "code",
    }
)
_URL = re.compile(r"(?:oip\+)?https?://[^\s'\"<>]+")


def is_secret_param(name: str) -> bool:
    return name.lower().replace("-", "_") in SECRET_PARAMS


def redact_url(url: str) -> str:
    """``url`` with its user info and secret query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    # the query's other parameters are kept byte for byte (no decoding, no re-encoding)
    pieces = [] if not parts.query else parts.query.split("&")
    for i, piece in enumerate(pieces):
        name, eq, _ = piece.partition("=")
        if eq and is_secret_param(unquote_plus(name)):
            pieces[i] = f"{name}={MASK}"
    if netloc == parts.netloc and "&".join(pieces) == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(pieces), parts.fragment))


def redact_text(text: str) -> str:
    """Every URL inside ``text`` (a command line, a message) redacted."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)


def has_url_secret(url: str) -> bool:
    """Whether ``url`` carries a credential (user info or a secret query parameter)."""
    parts = urlsplit(url)
    return "@" in parts.netloc or any(
        is_secret_param(k) for k, _ in parse_qsl(parts.query, keep_blank_values=True)
    )
