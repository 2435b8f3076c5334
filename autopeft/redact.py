"""Credentials in URLs (storage databases, Ray addresses) never reach logs, reports or files."""

from __future__ import annotations

import re

_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^/@:]*)(?::[^/@]*)?@")


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://***@host/db`` (user names can be secret too)."""
    return _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}***@", url)


def has_credentials(url: str) -> bool:
    return bool(_CREDENTIALS.search(url))
