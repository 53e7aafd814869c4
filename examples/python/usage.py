"""Reading OAuth tokens from Python: plain files, and posit-sdk-style helpers."""

import json
import os
import pathlib

from oauthfs import Integrations, get_credentials

mount = pathlib.Path(os.environ.get("OAUTHFS_MOUNT", "/oauth"))

# A token is a file: read it like any other.
token = pathlib.Path(mount, "by-name", "Demo", "access_token").read_text()
print("read_text:", len(token), "chars")
with open(mount / "by-name" / "Demo" / "access_token") as f:
    print("open().read():", f.read() == token)

# The index is JSON.
with open(mount / "integrations.json") as f:
    print("json.load:", [i["name"] for i in json.load(f)])

# posit-sdk style: find the integration, then its credentials.
integrations = Integrations(mount)
demo = integrations.find_by(name="^Demo$")[0]
print("find_by(name='^Demo$'):", demo["name"], demo["authenticated"])
print("find_by(authenticated=False):", [i["name"] for i in integrations.find_by(authenticated=False)])
print("get(guid):", integrations.get(demo["guid"])["name"])
creds = get_credentials(audience=demo["guid"], mount=mount)
print("get_credentials:", creds["token_type"], creds["access_token"] == token)

other = integrations.find_by(name="^Other$")[0]
print("not signed in:", get_credentials(audience=other["guid"], mount=mount))
