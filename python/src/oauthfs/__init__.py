"""OAuth access tokens from an oauthfs mount, in the shape of posit-sdk.

An oauthfs mount offers each user the tokens of the integrations an
administrator configured, as files::

    /oauth/integrations.json        every integration (guid, name, authenticated, ...)
    /oauth/<guid>/access_token      the current access token
    /oauth/<guid>/expiry            when it expires (RFC 3339, UTC)
    /oauth/<guid>/token.json        the token, its type, expiry, scopes and ID token, in one read
    /oauth/<guid>/id_token          the OpenID Connect ID token, when the provider sent one
    /oauth/<guid>/tokens/<variant>/ tokens for other resources or fewer scopes
    /oauth/<guid>/meta.json         the integration and its sign-in status
    /oauth/by-name/<name>           a link to <guid>

This module reads them with the calls of posit-sdk's Workbench OAuth API,
so that code written for ``posit.workbench`` works with ``oauthfs`` in its
place::

    from oauthfs import Client          # was: from posit.workbench import Client

    client = Client()
    github = client.oauth.integrations.find_by(name="^GitHub$")
    credentials = client.oauth.get_credentials(audience=github["guid"])
    if credentials:
        headers = {"Authorization": f"Bearer {credentials['access_token']}"}

or, in one line, ``oauthfs.token("GitHub")``. Every call reads the mount,
and oauthfs refreshes a token when it is read: ask for the token each time
you need one rather than keeping it. Never print or log a token.

The mount is the ``mount`` argument, else ``$OAUTHFS_MOUNT``, else
``/oauth``. Errors: :class:`MountError` (an ``OSError``) when there is no
oauthfs mount there, ``KeyError`` for an unknown integration, ``ValueError``
or ``TypeError`` for a malformed argument, ``re.error`` for a malformed
regular expression, and ``OSError`` with the errno of the failed read
otherwise (``EIO``: the provider or the broker is unreachable). Each
message names the path it tried.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, List, NoReturn, Optional, TypedDict, Union, cast

__all__ = [
    "Client",
    "Credentials",
    "DelegatedToken",
    "Integration",
    "Integrations",
    "MountError",
    "OAuth",
    "mount_path",
    "token",
]

__version__ = "0.1.0"

#: The mount used when neither an argument nor ``$OAUTHFS_MOUNT`` names one.
DEFAULT_MOUNT = "/oauth"

#: A path: a string or a ``pathlib.Path``.
StrPath = Union[str, "os.PathLike[str]"]

_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# What an errno of a token read means on an oauthfs mount
# (docs/design.md, "Errors a reader sees").
_HINTS = {
    errno.ENOKEY: "not signed in; sign in with: oauthfs login {name}",
    errno.EKEYEXPIRED: "the sign-in has expired; sign in again with: oauthfs login {name}",
    errno.EIO: "the provider or the broker is unreachable; try again later",
    errno.EACCES: "only the user who mounted it may read it",
}


class Integration(TypedDict):
    """An integration, as ``integrations.json`` and ``meta.json`` have it.

    A plain ``dict``, like posit-sdk's ``Integration``: ``integration["name"]``.

    - ``guid``: its identifier (lowercase), for ``get_credentials(audience=)``.
    - ``name``: its name, unique, as under ``by-name/``; ``display_name``:
      the name shown to people.
    - ``client_id``, ``auth_url``, ``token_url``, ``scopes``: its OAuth client
      and the scopes it asks for; ``issuer``: its authorization server's
      issuer identifier, or None when the configuration names none.
    - ``authenticated``: True when you are signed in (status ``signed_in``
      or ``error``).
    - ``status``: ``signed_in``, ``not_signed_in``, ``expired`` (sign in
      again) or ``error`` (the last refresh failed for a transient reason).
    - ``expiry``: when the current token expires, RFC 3339 in UTC, or None.
    - ``granted_scopes``: the scopes the provider granted.
    - ``error``: why the last refresh failed, for people, or None.
    - ``account``: the provider account that signed in, when the provider
      said, or None.
    - ``tokens``: its token variants, ``{"name", "resource", "scopes"}``
      each (the directories of ``tokens/``); ``resources``: the other
      resources its tokens may be asked for.
    """

    guid: str
    name: str
    display_name: str
    client_id: str
    auth_url: str
    token_url: str
    issuer: Optional[str]
    scopes: List[str]
    authenticated: bool
    status: str
    expiry: Optional[str]
    granted_scopes: List[str]
    error: Optional[str]
    account: Optional[str]
    tokens: List[Any]
    resources: List[str]


class Credentials(TypedDict):
    """What ``get_credentials`` returns: posit-sdk's keys, and ``token_type``.

    - ``access_token``: the token; send it as ``Authorization: <token_type> <token>``.
    - ``token_type``: ``"Bearer"`` unless the provider said otherwise.
    - ``expiry``: when the token expires, an aware ``datetime`` in UTC, or
      None when it does not expire.
    - ``integration_id``: the integration's guid (lowercase).

    All come from one read of ``token.json``: the expiry is the token's own.
    """

    access_token: str
    token_type: str
    expiry: Optional[datetime]
    integration_id: str


class DelegatedToken(TypedDict):
    """What ``get_delegated_azure_token`` returns: a token for a resource.

    - ``access_token``, ``token_type``: the token and how to send it.
    - ``expires_in``: seconds until it expires (None when it does not).
    - ``expiry``: when it expires, an aware ``datetime`` in UTC, or None.
    - ``resource``: the resource it is for.
    - ``integration_id``: the integration that obtained it.
    """

    access_token: str
    token_type: str
    expires_in: Optional[int]
    expiry: Optional[datetime]
    resource: str
    integration_id: str


class MountError(OSError):
    """There is no oauthfs mount at the path tried.

    Raised when the path does not exist, is not an oauthfs mount (it has no
    ``integrations.json``), or its oauthfs process is gone. It is an
    ``OSError`` (``EnvironmentError``, as posit-sdk's ``Client()`` raises
    outside Workbench) whose ``errno`` is the failed read's, ``filename``
    the file tried and ``mount`` the mount path.
    """

    def __init__(self, message: str, mount: StrPath, filename: StrPath, code: int) -> None:
        super().__init__(code, message, os.fspath(filename))
        self.mount = os.fspath(mount)

    def __str__(self) -> str:
        return str(self.strerror)


def mount_path(mount: Optional[StrPath] = None) -> Path:
    """The mount to read: ``mount``, else ``$OAUTHFS_MOUNT``, else ``/oauth``.

    An empty string counts as not given.
    """
    if mount is None or mount == "":
        mount = os.environ.get("OAUTHFS_MOUNT") or DEFAULT_MOUNT
    if not isinstance(mount, (str, os.PathLike)):
        raise TypeError(f"oauthfs: the mount must be a path, not {mount!r}")
    return Path(mount)


def token(name_or_guid: str, mount: Optional[StrPath] = None) -> str:
    """The current access token of an integration, by name or guid.

    Reads ``<mount>/by-name/<name>/access_token`` (or ``<mount>/<guid>/...``);
    oauthfs refreshes the token when it is read. Raises ``KeyError`` for an
    unknown integration, :class:`MountError` when there is no mount, and
    ``OSError`` with the errno otherwise: ``ENOKEY`` when you are not signed
    in, ``EKEYEXPIRED`` when you must sign in again, ``EIO`` when the
    provider or the broker is unreachable.
    """
    _check_str(name_or_guid, "name_or_guid")
    if "/" in name_or_guid or "\0" in name_or_guid or name_or_guid in (".", ".."):
        raise ValueError(f"oauthfs: {name_or_guid!r} is not an integration's name or guid")
    root = mount_path(mount)
    guid = _guid(name_or_guid)
    d = root / guid if guid else root / "by-name" / name_or_guid
    try:
        return _read(d / "access_token")
    except OSError as e:
        _raise(root, e, name_or_guid, "guid" if guid else "name")


class Client:
    """The entry point, like posit-sdk's ``posit.workbench.Client``.

    ``Client()`` reads ``$OAUTHFS_MOUNT`` (else ``/oauth``); ``Client(mount)``
    reads ``mount``. Raises :class:`MountError` when there is no oauthfs
    mount there. Nothing is kept: every call reads the mount.
    """

    def __init__(self, mount: Optional[StrPath] = None) -> None:
        self.mount: Path = mount_path(mount)
        """The mount this client reads."""
        _index(self.mount)

    @property
    def oauth(self) -> OAuth:
        """The OAuth API: ``get_credentials`` and ``integrations``."""
        return OAuth(self.mount)

    def __repr__(self) -> str:
        return f"oauthfs.Client(mount={str(self.mount)!r})"


class OAuth:
    """OAuth credentials, like posit-sdk's ``client.oauth``."""

    def __init__(self, mount: Optional[StrPath] = None) -> None:
        self.mount: Path = mount_path(mount)

    @property
    def integrations(self) -> Integrations:
        """The integrations: ``find()``, ``get(guid)`` and ``find_by(...)``."""
        return Integrations(self.mount)

    def get_credentials(self, audience: str) -> Optional[Credentials]:
        """The credentials of the integration whose guid is ``audience``.

        ``{"access_token", "token_type", "expiry", "integration_id"}``, read
        from ``<mount>/<guid>/``; oauthfs refreshes the token when it is read,
        so call this each time you need a token. ``expiry`` is read just
        before the token, so it is never later than the token's own.

        Returns None when you are not signed in or must sign in again
        (``integrations.get(guid)["status"]`` says which). Raises
        ``KeyError`` when no integration has that guid (in either case),
        :class:`MountError` when there is no mount, and ``OSError`` with the
        errno for other failures (``EIO``: the provider or the broker is
        unreachable).
        """
        _check_str(audience, "audience")
        guid = _guid(audience)
        if guid is None:
            _index(self.mount)  # a missing mount says so first
            raise KeyError(
                f"oauthfs: {audience!r} is not an integration's guid (at {self.mount}); "
                "find one with integrations.find_by(name=...)"
            )
        d = self.mount / guid
        try:
            doc = _json(self.mount, d / "token.json")
        except MountError:
            raise
        except OSError as e:
            if e.errno in (errno.ENOKEY, errno.EKEYEXPIRED):
                return None
            _raise(self.mount, e, guid, "guid")
        return Credentials(
            access_token=doc["access_token"],
            token_type=doc["token_type"],
            expiry=_parse_expiry(doc["expiry"] or ""),
            integration_id=guid,
        )

    def get_delegated_azure_token(
        self, resource: str, integration: Optional[str] = None
    ) -> DelegatedToken:
        """A token for ``resource`` (normally a URL), from the same sign-in.

        Like rstudioapi's ``getDelegatedAzureToken``: Microsoft Entra (and
        any provider with RFC 8707 resource indicators) gives tokens for
        other resources with the refresh token of one sign-in. The token
        comes from the integration's token variant for that resource,
        ``<guid>/tokens/<variant>/token.json``, when the administrator
        configured one; else from the broker (``oauthfs token --resource``),
        for a resource the integration lists in ``resources``.

        ``integration`` is a guid or name; without it, the one integration
        whose variants or resources name ``resource``. Raises ``KeyError``
        when none does (or no integration has that name), ``ValueError``
        when several do, and ``OSError`` with the errno when the token
        cannot be had (``ENOKEY``: not signed in).
        """
        _check_str(resource, "resource")
        index = _index(self.mount)

        def gives(i: Integration) -> bool:
            return resource in i.get("resources", []) or any(
                v.get("resource") == resource for v in i.get("tokens", [])
            )

        if integration is not None:
            _check_str(integration, "integration")
            want = integration.lower()
            candidates = [i for i in index if i["guid"] == want or i["name"] == integration]
            if not candidates:
                raise KeyError(f"oauthfs: no integration {integration!r} at {self.mount}")
            if not gives(candidates[0]):
                raise KeyError(
                    f"oauthfs: integration {integration!r} at {self.mount} gives no tokens for "
                    f"{resource!r}: it names no such variant or resource"
                )
        else:
            candidates = [i for i in index if gives(i)]
            if not candidates:
                raise KeyError(
                    f"oauthfs: no integration at {self.mount} gives tokens for {resource!r}; "
                    "an administrator names it in a token variant or in resources"
                )
            if len(candidates) > 1:
                names = ", ".join(repr(i["name"]) for i in candidates)
                raise ValueError(
                    f"oauthfs: several integrations give tokens for {resource!r} ({names}); "
                    "say which with integration="
                )
        i = candidates[0]
        guid = i["guid"]
        variant = next((v["name"] for v in i.get("tokens", []) if v.get("resource") == resource), None)
        if variant is not None:
            try:
                doc = _json(self.mount, self.mount / guid / "tokens" / variant / "token.json")
            except MountError:
                raise
            except OSError as e:
                _raise(self.mount, e, i["name"], "name")
        else:
            doc = _broker_token(i["name"], resource)
        expiry = _parse_expiry(doc.get("expiry") or "")
        expires_in = None
        if expiry is not None:
            expires_in = max(0, int((expiry - datetime.now(timezone.utc)).total_seconds()))
        return DelegatedToken(
            access_token=doc["access_token"],
            token_type=doc["token_type"],
            expires_in=expires_in,
            expiry=expiry,
            resource=resource,
            integration_id=guid,
        )

    def __repr__(self) -> str:
        return f"oauthfs.OAuth(mount={str(self.mount)!r})"


class Integrations:
    """The integrations an administrator configured, like posit-sdk's
    ``client.oauth.integrations``. Reading them never refreshes a token."""

    def __init__(self, mount: Optional[StrPath] = None) -> None:
        self.mount: Path = mount_path(mount)

    def find(self) -> List[Integration]:
        """Every integration, signed in or not, sorted by name."""
        return _index(self.mount)

    def get(self, guid: str) -> Optional[Integration]:
        """The integration with this guid (in either case), or None.

        Raises ``ValueError`` when ``guid`` is not a non-empty string, as
        posit-sdk does.
        """
        _check_str(guid, "guid")
        g = _guid(guid)
        if g is None:
            _index(self.mount)  # a missing mount says so first
            return None
        try:
            return cast(Integration, _json(self.mount, self.mount / g / "meta.json"))
        except MountError:
            raise
        except OSError as e:
            if e.errno != errno.ENOENT:
                _raise(self.mount, e, g, "guid")
            _index(self.mount)  # MountError when the mount is the problem
            return None

    def find_by(
        self,
        name: Optional[str] = None,
        display_name: Optional[str] = None,
        guid: Optional[str] = None,
        authenticated: Optional[bool] = None,
    ) -> Optional[Integration]:
        """The first integration (by name) that matches every criterion given, or None.

        ``name`` and ``display_name`` are regular expressions, searched for
        anywhere in the value: anchor them (``"^GitHub$"``) for an exact
        match. ``guid`` is matched exactly, in either case. ``authenticated``
        is True for an integration you are signed in to, False for one you
        are not. Raises ``re.error`` for a malformed regular expression and
        ``TypeError`` for an argument of the wrong type.
        """
        name_re = _regex("name", name)
        display_name_re = _regex("display_name", display_name)
        if guid is not None:
            _check_str(guid, "guid")
        if authenticated is not None and not isinstance(authenticated, bool):
            raise TypeError(
                f"oauthfs: authenticated must be True, False or None, not {authenticated!r}"
            )
        for i in _index(self.mount):
            if (
                _search(name_re, i.get("name"))
                and _search(display_name_re, i.get("display_name"))
                and (guid is None or i.get("guid") == guid.lower())
                and (authenticated is None or i.get("authenticated") is authenticated)
            ):
                return i
        return None

    def __repr__(self) -> str:
        return f"oauthfs.Integrations(mount={str(self.mount)!r})"


def _broker_token(name: str, resource: str) -> Any:
    """token.json of a token for resource, asked of the broker with the
    oauthfs command (which finds the broker's socket)."""
    try:
        out = subprocess.run(
            ["oauthfs", "token", "--json", "--resource", resource, name],
            capture_output=True,
            check=False,
            timeout=60,
        )
    except FileNotFoundError:
        raise OSError(
            errno.ENOENT,
            f"oauthfs: a token for {resource!r} needs the oauthfs command, which is not on PATH",
        ) from None
    if out.returncode != 0:
        msg = out.stderr.decode(errors="replace").strip().splitlines()
        code = _EXIT_ERRNO.get(out.returncode, errno.EIO)
        raise OSError(code, f"oauthfs: {name}: {msg[0] if msg else 'oauthfs token failed'}")
    return json.loads(out.stdout)


# What an exit code of the oauthfs command means as an errno.
_EXIT_ERRNO = {3: errno.ENOENT, 4: errno.ENOKEY, 5: errno.EKEYEXPIRED, 6: errno.EIO, 7: errno.EACCES}


def _check_str(value: object, what: str) -> None:
    """Raises ValueError unless value is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"oauthfs: {what} must be a non-empty string, not {value!r}")


def _guid(s: str) -> Optional[str]:
    """s as a canonical (lowercase) guid, or None when it is not shaped like one."""
    g = s.lower()
    return g if _GUID.fullmatch(g) else None


def _regex(what: str, pattern: object) -> Optional[re.Pattern[str]]:
    """The compiled pattern (None for None); re.error naming the argument
    when it is malformed."""
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise TypeError(f"oauthfs: {what} must be a regular expression (a string), not {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as e:
        raise re.error(
            f"oauthfs: {what}={pattern!r} is not a regular expression: {e.msg}", e.pattern, e.pos
        ) from None


def _search(pattern: Optional[re.Pattern[str]], value: object) -> bool:
    """Whether pattern (None: anything) is found in value, a string."""
    return pattern is None or (isinstance(value, str) and pattern.search(value) is not None)


def _read(path: Path) -> str:
    """The whole file, in one read: a token file's bytes are the token."""
    return path.read_bytes().decode()


def _parse_expiry(s: str) -> Optional[datetime]:
    """The expiry file's RFC 3339 UTC time, aware; None when it is empty."""
    if not s:
        return None
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(timezone.utc)


def _json(mount: Path, path: Path) -> Any:
    """The JSON document at path; MountError when it is not JSON."""
    text = _read(path)
    try:
        return json.loads(text)
    except ValueError as e:
        raise MountError(
            f"oauthfs: {mount} is not an oauthfs mount: {path} is not JSON ({e})",
            mount,
            path,
            errno.EINVAL,
        ) from None


def _index(mount: Path) -> List[Integration]:
    """integrations.json; MountError when it cannot be read, saying why."""
    path = mount / "integrations.json"
    try:
        index = _json(mount, path)
    except MountError:
        raise
    except OSError as e:
        if e.errno == errno.ENOTCONN:
            why = f"the oauthfs mount at {mount} is gone ({e.strerror}): its process stopped."
        elif e.errno in (errno.ENOENT, errno.ENOTDIR) and not os.path.isdir(mount):
            why = f"no oauthfs mount at {mount}: it does not exist or is not a directory."
        elif e.errno in (errno.ENOENT, errno.ENOTDIR):
            why = f"{mount} is not an oauthfs mount (no {path}): is oauthfs running?"
        else:
            raise MountError(
                f"oauthfs: cannot read the oauthfs mount at {mount} ({path}: {e.strerror})",
                mount,
                path,
                e.errno or errno.EIO,
            ) from None
        raise MountError(
            f"oauthfs: {why} Start oauthfs there, or give the mount's path: "
            "Client(mount=...), the mount argument, or $OAUTHFS_MOUNT.",
            mount,
            path,
            e.errno,
        ) from None
    if not isinstance(index, list):
        raise MountError(
            f"oauthfs: {mount} is not an oauthfs mount: {path} is not a JSON array",
            mount,
            path,
            errno.EINVAL,
        )
    return cast(List[Integration], index)


def _raise(mount: Path, e: OSError, key: str, kind: str) -> NoReturn:
    """Raises the error for a failed read of an integration's file."""
    _index(mount)  # MountError when the mount is the problem
    if e.errno == errno.ENOENT:
        raise KeyError(
            f"oauthfs: no integration with {kind} {key!r} at {mount} ({e.filename}: {e.strerror})"
        ) from None
    hint = _HINTS.get(e.errno or 0)
    if hint is None:
        raise e
    detail = hint.format(name=shlex.quote(key))
    raise OSError(e.errno, f"{e.strerror} (oauthfs: {key}: {detail})", e.filename) from None
