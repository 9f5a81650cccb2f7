"""Credentials out of anything shown: the userinfo of URLs in messages, bodies and log lines."""

from __future__ import annotations

import re

# scheme://userinfo@ — greedy up to the last '@' before a '/' or whitespace, so a password holding '@', '?'
# or '#' (unencoded, as people do write them) is masked whole; masking a little too much is harmless here.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s]*)@")
MASK = "***"


def mask_userinfo(text: str) -> str:
    """`text` (a URL, or a message holding URLs) with every URL's password replaced by `***`. A lone
    userinfo (`http://token@host`) is taken for a token and masked whole; a username before ':' stays,
    since it names the account without granting access."""
    return _USERINFO.sub(_masked, text) if "://" in text and "@" in text else text


def _masked(match: re.Match[str]) -> str:
    user, sep, _ = match["userinfo"].partition(":")
    return f"{match['scheme']}{user}:{MASK}@" if sep else f"{match['scheme']}{MASK}@"
