"""Tests of the oauthfs package against a live ``oauthfs dev`` mount.

The session fixture ``dev`` runs ``$OAUTHFS_BIN dev`` (default
``../bin/oauthfs`` from this package's directory: ``go build -o bin/oauthfs
./cmd/oauthfs``) in a temporary directory with a private
``XDG_RUNTIME_DIR``: Demo signed in, Other not, tokens that live a minute.
The tests that need it skip when there is no FUSE or no binary, unless
``OAUTHFS_REQUIRE_FUSE=1``, which makes that a failure. The others read
plain directories and need nothing.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Dict, Generator, Iterator, List

import pytest

import oauthfs
from oauthfs import Client, MountError

BIN = Path(os.environ.get("OAUTHFS_BIN") or Path(__file__).resolve().parents[2] / "bin" / "oauthfs")
META_KEYS = {
    "guid", "name", "display_name", "client_id", "auth_url", "token_url", "issuer", "scopes",
    "authenticated", "status", "expiry", "granted_scopes", "error", "account", "tokens",
    "resources", "docker_registries", "docker_username",
}  # fmt: skip
UNKNOWN = "00000000-0000-4000-8000-000000000001"


@dataclass
class Dev:
    """A running ``oauthfs dev``."""

    mount: Path
    demo: str  # Demo's guid (signed in)
    other: str  # Other's guid (not signed in)
    env: Dict[str, str]  # the environment the oauthfs commands find its broker with
    proc: subprocess.Popen[bytes]  # the oauthfs dev process


def _unavailable() -> str:
    """Why the live tests cannot run here, or ""."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if os.getuid() != 0 and shutil.which("fusermount3") is None:
        return "not root and no fusermount3 (install fuse3)"
    if not os.access(BIN, os.X_OK):
        return f"no oauthfs binary at {BIN} (go build -o bin/oauthfs ./cmd/oauthfs, or set OAUTHFS_BIN)"
    return ""


def _start_dev() -> Generator[Dev, None, None]:
    """Runs ``oauthfs dev`` until the generator is closed, then stops it
    with SIGINT and checks that it cleaned up."""
    why = _unavailable()
    if why:
        if os.environ.get("OAUTHFS_REQUIRE_FUSE") == "1":
            pytest.fail(f"FUSE is required (OAUTHFS_REQUIRE_FUSE=1) but unavailable: {why}")
        pytest.skip(f"the live tests need FUSE and oauthfs: {why}")
    tmp = Path(tempfile.mkdtemp(prefix="oauthfs-python-"))
    run = tmp / "run"
    run.mkdir(mode=0o700)
    run.chmod(0o700)
    mount = tmp / "oauth"
    env = {k: v for k, v in os.environ.items() if k not in ("OAUTHFS_BROKER", "OAUTHFS_MOUNT")}
    env["XDG_RUNTIME_DIR"] = str(run)
    env["TMPDIR"] = str(tmp / "tmp")  # dev's own temporary files: none after a clean stop
    (tmp / "tmp").mkdir()
    out, err = tmp / "dev.out", tmp / "dev.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [str(BIN), "dev", "--token-lifetime", "1m", str(mount)],
            cwd=tmp,
            env=env,
            stdout=o,
            stderr=e,
        )

    def output() -> str:
        return f"stdout:\n{out.read_text()}\nstderr:\n{err.read_text()}"

    started = False
    try:
        deadline = time.monotonic() + 30
        while "Press Ctrl-C" not in out.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"oauthfs dev did not start (exit {proc.poll()}):\n{output()}")
            time.sleep(0.05)
        m = re.search(r"export OAUTHFS_BROKER='([^']+)'", out.read_text())
        env["OAUTHFS_BROKER"] = m.group(1) if m else str(run / "oauthfs" / "broker.sock")
        started = True
        guid = {
            name: os.readlink(mount / "by-name" / name).rsplit("/", 1)[-1]
            for name in ("Demo", "Other")
        }
        yield Dev(mount=mount, demo=guid["Demo"], other=guid["Other"], env=env, proc=proc)
    finally:
        killed = proc.poll() == -signal.SIGKILL  # by the test: its mount is left dead
        if killed:
            umount = ["umount"] if os.getuid() == 0 else ["fusermount3", "-u"]
            subprocess.run([*umount, str(mount)], check=True, timeout=30)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        clean = "stopped and cleaned up" in out.read_text() and not any((tmp / "tmp").iterdir())
        text = output()
        shutil.rmtree(tmp, ignore_errors=True)
        assert (
            killed or not started or (rc == 0 and clean)
        ), f"oauthfs dev did not stop cleanly (exit {rc}):\n{text}"


@pytest.fixture(scope="session")
def dev() -> Iterator[Dev]:
    """The ``oauthfs dev`` the live tests share; they leave it as it was."""
    yield from _start_dev()


@pytest.fixture
def client(dev: Dev) -> Client:
    return Client(dev.mount)


@pytest.fixture(autouse=True)
def no_mount_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without $OAUTHFS_MOUNT."""
    monkeypatch.delenv("OAUTHFS_MOUNT", raising=False)


def read(path: Path) -> str:
    return path.read_bytes().decode()


# Credentials.


def test_get_credentials(dev: Dev, client: Client) -> None:
    before = datetime.now(timezone.utc)
    files = [(read(dev.mount / dev.demo / "access_token"), read(dev.mount / dev.demo / "expiry"))]
    creds = client.oauth.get_credentials(audience=dev.demo)
    files.append(
        (read(dev.mount / dev.demo / "access_token"), read(dev.mount / dev.demo / "expiry"))
    )
    assert creds is not None
    assert set(creds) == {"access_token", "token_type", "expiry", "integration_id"}
    assert creds["token_type"] == "Bearer"
    assert creds["integration_id"] == dev.demo
    expiry = creds["expiry"]
    assert isinstance(expiry, datetime) and expiry.utcoffset() == timedelta(0)
    # A token is handed out until shortly before it expires; a new one lives a minute.
    assert before < expiry <= before + timedelta(minutes=1, seconds=1)
    # The same as the files (read before and after, should a refresh come between).
    expiry_file = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert (creds["access_token"], expiry_file) in files


def test_get_credentials_one_version(dev: Dev, client: Client) -> None:
    # From token.json: the expiry belongs to the token, whatever refresh
    # comes between two reads.
    for _ in range(20):
        creds = client.oauth.get_credentials(audience=dev.demo)
        assert creds is not None
        doc = json.loads(read(dev.mount / dev.demo / "token.json"))
        if doc["access_token"] == creds["access_token"]:
            assert doc["expiry"] == creds["expiry"].strftime("%Y-%m-%dT%H:%M:%SZ")


def test_get_delegated_azure_token_variant(dev: Dev, client: Client) -> None:
    tok = client.oauth.get_delegated_azure_token("https://storage.dev.test")
    assert set(tok) == {"access_token", "token_type", "expires_in", "expiry", "resource", "integration_id"}
    assert tok["integration_id"] == dev.demo and tok["resource"] == "https://storage.dev.test"
    assert tok["token_type"] == "Bearer" and tok["access_token"].startswith("dev-at-")
    assert tok["access_token"] == read(dev.mount / dev.demo / "tokens" / "storage" / "access_token")
    assert tok["access_token"] != read(dev.mount / dev.demo / "access_token")
    assert tok["expires_in"] is not None and 0 < tok["expires_in"] <= 60


def test_get_delegated_azure_token_through_the_broker(dev: Dev, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # A resource the integration lists but no variant names: the oauthfs
    # command asks the broker.
    for k, v in dev.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PATH", f"{BIN.parent}:{os.environ['PATH']}")
    tok = client.oauth.get_delegated_azure_token("https://vault.dev.test", integration="Demo")
    assert tok["access_token"].startswith("dev-at-") and tok["resource"] == "https://vault.dev.test"
    assert tok["access_token"] != read(dev.mount / dev.demo / "access_token")


def test_get_delegated_azure_token_errors(dev: Dev, client: Client) -> None:
    with pytest.raises(KeyError, match="no integration .* gives tokens for 'https://nowhere.test'"):
        client.oauth.get_delegated_azure_token("https://nowhere.test")
    with pytest.raises(KeyError, match="no integration 'Nope'"):
        client.oauth.get_delegated_azure_token("https://storage.dev.test", integration="Nope")
    with pytest.raises(KeyError, match="integration 'Other' .* gives no tokens for"):
        client.oauth.get_delegated_azure_token("https://storage.dev.test", integration="Other")


def test_get_credentials_guid_in_either_case(dev: Dev, client: Client) -> None:
    creds = client.oauth.get_credentials(dev.demo.upper())
    assert creds is not None and creds["integration_id"] == dev.demo


def test_get_credentials_not_signed_in(dev: Dev, client: Client) -> None:
    assert client.oauth.get_credentials(audience=dev.other) is None


@pytest.mark.parametrize("audience", [UNKNOWN, "Demo", "not-a-guid"])
def test_get_credentials_unknown(dev: Dev, client: Client, audience: str) -> None:
    with pytest.raises(KeyError, match=re.escape(str(dev.mount))):
        client.oauth.get_credentials(audience=audience)


@pytest.mark.parametrize("audience", ["", None, 42])
def test_get_credentials_bad_audience(tmp_path: Path, audience: object) -> None:
    with pytest.raises(ValueError, match="audience must be a non-empty string"):
        oauthfs.OAuth(tmp_path).get_credentials(audience=audience)  # type: ignore[arg-type]


# Integrations.


def test_find(dev: Dev, client: Client) -> None:
    found = client.oauth.integrations.find()
    assert [i["name"] for i in found] == ["Demo", "Other"]
    for i in found:
        assert set(i) == META_KEYS
    demo, other = found
    assert (
        demo["guid"] == dev.demo and demo["authenticated"] is True and demo["status"] == "signed_in"
    )
    # The account is the ID token's email (the sign-in asked for openid).
    assert demo["account"] == "dev-user@localprovider.test" and demo["error"] is None and demo["expiry"]
    assert (
        other["guid"] == dev.other
        and other["authenticated"] is False
        and other["status"] == "not_signed_in"
    )
    assert other["expiry"] is None and other["account"] is None


def test_get(dev: Dev, client: Client) -> None:
    import json

    got = client.oauth.integrations.get(dev.other)
    assert got == json.loads(read(dev.mount / dev.other / "meta.json"))
    demo = client.oauth.integrations.get(dev.demo.upper())
    assert demo is not None and demo["name"] == "Demo" and demo["scopes"] == ["openid", "read"]
    assert client.oauth.integrations.get(UNKNOWN) is None
    assert client.oauth.integrations.get("Demo") is None  # a name is not a guid
    with pytest.raises(ValueError, match="guid must be a non-empty string"):
        client.oauth.integrations.get("")


def test_find_by(dev: Dev, client: Client) -> None:
    integrations = client.oauth.integrations

    def guid(i: oauthfs.Integration | None) -> str | None:
        return None if i is None else i["guid"]

    assert guid(integrations.find_by(name="^Demo$")) == dev.demo
    assert guid(integrations.find_by(name="emo")) == dev.demo  # searched for, not matched
    assert guid(integrations.find_by(name="^demo$")) is None  # case matters
    assert guid(integrations.find_by(authenticated=True)) == dev.demo
    assert guid(integrations.find_by(authenticated=False)) == dev.other
    assert guid(integrations.find_by(name="^Other$", authenticated=False)) == dev.other
    assert guid(integrations.find_by(name="^Other$", authenticated=True)) is None
    assert guid(integrations.find_by(display_name="^Oth")) == dev.other
    assert guid(integrations.find_by(guid=dev.other.upper())) == dev.other
    assert guid(integrations.find_by()) == dev.demo  # the first, by name
    assert guid(integrations.find_by(name="^Nothing$")) is None


def test_find_by_bad_arguments(tmp_path: Path) -> None:
    integrations = oauthfs.Integrations(tmp_path / "missing")  # checked before any read
    with pytest.raises(re.error, match=r"name='\(' is not a regular expression"):
        integrations.find_by(name="(")
    with pytest.raises(re.error, match=r"display_name='\[' is not a regular expression"):
        integrations.find_by(display_name="[")
    with pytest.raises(TypeError, match="authenticated must be True, False or None"):
        integrations.find_by(authenticated="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be a regular expression"):
        integrations.find_by(name=1)  # type: ignore[arg-type]


# token().


def test_token(dev: Dev) -> None:
    gets: List[Callable[[], str]] = [
        lambda: oauthfs.token("Demo", mount=dev.mount),
        lambda: oauthfs.token(dev.demo, mount=str(dev.mount)),
        lambda: oauthfs.token(dev.demo.upper(), dev.mount),
    ]
    for get in gets:
        before = read(dev.mount / "by-name" / "Demo" / "access_token")
        got = get()
        assert got in (before, read(dev.mount / dev.demo / "access_token"))
        assert got and "\n" not in got


def test_token_not_signed_in(dev: Dev) -> None:
    with pytest.raises(OSError) as e:
        oauthfs.token("Other", mount=dev.mount)
    assert e.value.errno == errno.ENOKEY
    assert e.value.filename == str(dev.mount / "by-name" / "Other" / "access_token")
    assert "oauthfs login Other" in str(e.value)


@pytest.mark.parametrize("name", ["Nothing", UNKNOWN, "by-name", "integrations.json"])
def test_token_unknown(dev: Dev, name: str) -> None:
    with pytest.raises(KeyError, match=re.escape(str(dev.mount))):
        oauthfs.token(name, mount=dev.mount)


@pytest.mark.parametrize("name", ["", "a/b", "..", ".", "../oauth", "x\0y"])
def test_token_bad_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="oauthfs: "):
        oauthfs.token(name, mount=tmp_path)


# Where the mount is.


def test_mount_from_environment(dev: Dev, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTHFS_MOUNT", str(dev.mount))
    assert oauthfs.mount_path() == dev.mount
    assert Client().mount == dev.mount
    assert Client().oauth.get_credentials(dev.demo) is not None
    assert oauthfs.token("Demo")
    assert oauthfs.Integrations().find_by(name="^Demo$") is not None


def test_mount_argument_wins(dev: Dev, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OAUTHFS_MOUNT", str(tmp_path / "elsewhere"))
    assert Client(mount=dev.mount).oauth.integrations.find_by(name="^Demo$") is not None
    assert oauthfs.token("Demo", mount=dev.mount)
    with pytest.raises(MountError, match=re.escape(str(tmp_path / "elsewhere"))):
        oauthfs.token("Demo")


def test_every_call_reads_the_mount() -> None:
    """A client sees a sign-out at its next call: nothing is kept."""
    gen = _start_dev()
    d = next(gen)
    try:
        c = Client(d.mount)
        assert c.oauth.get_credentials(d.demo) is not None
        assert c.oauth.integrations.get(d.demo)["authenticated"] is True  # type: ignore[index]
        subprocess.run(
            [str(BIN), "logout", "Demo"], env=d.env, check=True, capture_output=True, timeout=30
        )
        assert c.oauth.get_credentials(d.demo) is None
        assert c.oauth.integrations.get(d.demo)["status"] == "not_signed_in"  # type: ignore[index]
        assert c.oauth.integrations.find_by(authenticated=True) is None
        with pytest.raises(OSError) as e:
            oauthfs.token("Demo", d.mount)
        assert e.value.errno == errno.ENOKEY
    finally:
        gen.close()


def test_dead_mount() -> None:
    """A mount whose process was killed names the mount and says so."""
    gen = _start_dev()
    d = next(gen)
    try:
        d.proc.kill()
        d.proc.wait()
        calls: List[Callable[[], object]] = [
            lambda: Client(d.mount),
            lambda: oauthfs.token("Demo", d.mount),
        ]
        for call in calls:
            with pytest.raises(MountError) as e:
                call()
            assert e.value.errno == errno.ENOTCONN
            assert f"the oauthfs mount at {d.mount} is gone" in str(e.value)
    finally:
        gen.close()


# No mount: these need no FUSE.


def test_mount_path_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert oauthfs.mount_path() == Path("/oauth")
    monkeypatch.setenv("OAUTHFS_MOUNT", "")
    assert oauthfs.mount_path() == Path("/oauth")
    monkeypatch.setenv("OAUTHFS_MOUNT", "/srv/oauth")
    assert oauthfs.mount_path() == Path("/srv/oauth")
    assert oauthfs.mount_path("/here") == Path("/here")
    assert oauthfs.mount_path(Path("rel")) == Path("rel")
    with pytest.raises(TypeError, match="the mount must be a path"):
        oauthfs.mount_path(42)  # type: ignore[arg-type]


def test_missing_mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "missing"
    calls: List[Callable[[], object]] = [
        lambda: Client(missing),
        lambda: oauthfs.token("Demo", missing),
        lambda: oauthfs.OAuth(missing).get_credentials(UNKNOWN),
        lambda: oauthfs.OAuth(missing).get_credentials("Demo"),
        lambda: oauthfs.Integrations(missing).find(),
        lambda: oauthfs.Integrations(missing).get(UNKNOWN),
        lambda: oauthfs.Integrations(missing).find_by(name="x"),
    ]
    for call in calls:
        with pytest.raises(MountError) as e:
            call()
        assert f"no oauthfs mount at {missing}" in str(e.value)
        assert isinstance(e.value, OSError) and e.value.errno == errno.ENOENT
        assert e.value.mount == str(missing)
    monkeypatch.setenv("OAUTHFS_MOUNT", str(missing))
    with pytest.raises(MountError, match=re.escape(str(missing))):
        Client()


def test_not_an_oauthfs_mount(tmp_path: Path) -> None:
    (tmp_path / "by-name").mkdir()
    calls: List[Callable[[], object]] = [
        lambda: Client(tmp_path),
        lambda: oauthfs.token("Demo", tmp_path),
        lambda: oauthfs.Integrations(tmp_path).get(UNKNOWN),
    ]
    for call in calls:
        with pytest.raises(MountError, match=re.escape(f"{tmp_path} is not an oauthfs mount")):
            call()
    (tmp_path / "integrations.json").write_text("<html>")
    with pytest.raises(MountError, match="is not JSON"):
        Client(tmp_path)


def test_other_errors_keep_their_errno(tmp_path: Path) -> None:
    """A failure that is not about the mount is an OSError with its errno
    and the path (here a plain directory dressed as a mount)."""
    (tmp_path / "integrations.json").write_text("[]\n")
    (tmp_path / UNKNOWN / "token.json").mkdir(parents=True)
    with pytest.raises(OSError) as e:
        Client(tmp_path).oauth.get_credentials(UNKNOWN)
    assert e.value.errno == errno.EISDIR
    assert e.value.filename == str(tmp_path / UNKNOWN / "token.json")


def test_typed_package() -> None:
    assert (Path(oauthfs.__file__).parent / "py.typed").is_file()
