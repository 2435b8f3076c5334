"""Credentials in URLs (storage databases, Ray addresses, data URLs) never reach logs, reports or files.

One helper for every place that prints, logs or writes a user-given string: :func:`mask_url` for a
URL (parsed with SQLAlchemy's URL parser, which reads passwords holding ``/`` or ``:``), and
:func:`mask_text` for free text that may contain URLs (error messages of drivers, notes).
Both hide the user name too (it can be secret), and secret-looking query parameters
(``?password=…``, ``&token=…``).
"""

from __future__ import annotations

import re

MASK = "***"

# query parameters whose value is a secret, in any URL form (`?password=`, `&sslpassword=`, `;token=`)
_SECRET_PARAM = re.compile(
    r"(?i)(?P<key>(?:[?&;]|\b)(?:[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|credentials?)"
    r"|pass|auth|key|sig|signature|user|username|uid)=)(?P<value>[^&;#\s'\"]*)"
)
# scheme://userinfo@ — the userinfo runs to the last '@' of the unbroken run, so a password holding
# '/', ':' or '@' is covered whole (over-masking a later '@' in a path is the safe side)
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][\w+.-]*://)(?P<userinfo>[^\s'\"<>]*)@")


def _mask_params(text: str) -> str:
    return _SECRET_PARAM.sub(lambda m: f"{m.group('key')}{MASK}", text)


def mask_text(text: str) -> str:
    """Every URL credential in ``text`` replaced by ``***``: user info and secret query parameters."""
    if not text:
        return text
    return _mask_params(_USERINFO.sub(lambda m: f"{m.group('scheme')}{MASK}@", text))


def mask_url(url: str) -> str:
    """``postgresql://user:se/cret@host/db?password=x`` -> ``postgresql://***@host/db?password=***``."""
    if not url or "://" not in url:
        return mask_text(url)
    try:
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
    except Exception:  # not an RDB URL (ray://, s3://, https://): the text rules still apply
        return mask_text(url)
    if parsed.username is None and parsed.password is None:
        return mask_text(url)
    rendered = parsed.set(username=MASK, password=None).render_as_string(hide_password=False)
    return mask_text(rendered)


def mask_values(data):
    """A JSON-like structure with :func:`mask_text` applied to every string in it (settings written to files)."""
    if isinstance(data, str):
        return mask_text(data)
    if isinstance(data, dict):
        return {key: mask_values(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [mask_values(value) for value in data]
    return data


def has_credentials(url: str) -> bool:
    """Whether ``url`` carries anything :func:`mask_url` would hide."""
    return bool(url) and mask_url(url) != url
