"""OAuth credentials from an oauthfs mount, in the shape of posit-sdk.

Copy this file next to your code. It mirrors posit-sdk's OAuth helpers
(``integrations.find()``, ``get(guid)``, ``find_by(name=, authenticated=)``
and ``get_credentials(audience=)``) with nothing but the standard library:
every call reads the mount, so tokens are always current (oauthfs
refreshes them on read).
"""

import errno
import json
import os
import re
from pathlib import Path

MOUNT = Path(os.environ.get("OAUTHFS_MOUNT", "/oauth"))


class Integrations:
    """The integrations an administrator configured, as seen by you."""

    def __init__(self, mount=MOUNT):
        self.mount = Path(mount)

    def find(self):
        """All integrations: a list of dicts (guid, name, authenticated, ...)."""
        with open(self.mount / "integrations.json") as f:
            return json.load(f)

    def get(self, guid):
        """One integration by guid; KeyError if there is none."""
        try:
            return json.loads((self.mount / guid / "meta.json").read_text())
        except FileNotFoundError:
            raise KeyError(f"no integration with guid {guid!r}") from None

    def find_by(self, name=None, authenticated=None):
        """Integrations whose name matches the regular expression name and
        whose sign-in state is authenticated (None: either)."""
        pattern = re.compile(name) if name is not None else None
        return [
            i
            for i in self.find()
            if (pattern is None or pattern.search(i["name"]))
            and (authenticated is None or i["authenticated"] == authenticated)
        ]


def get_credentials(audience, mount=MOUNT):
    """Credentials for the integration with guid audience:
    {"access_token", "token_type", "expiry"}, or None when you are not
    signed in or the sign-in expired. KeyError for an unknown guid."""
    d = Path(mount) / audience
    try:
        token = (d / "access_token").read_text()
        expiry = (d / "expiry").read_text() or None
    except OSError as e:
        if e.errno in (errno.ENOKEY, errno.EKEYEXPIRED):
            return None
        if e.errno == errno.ENOENT:
            raise KeyError(f"no integration with guid {audience!r}") from None
        raise
    return {"access_token": token, "token_type": "Bearer", "expiry": expiry}
