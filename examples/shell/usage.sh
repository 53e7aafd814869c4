#!/usr/bin/env bash
# Reading OAuth tokens from the shell. OAUTHFS_MOUNT is the mount
# (default /oauth); API is a service that wants the token as a bearer.
set -euo pipefail
OAUTH=${OAUTHFS_MOUNT:-/oauth}

# cat prints the token exactly: no trailing newline.
token=$(cat "$OAUTH/by-name/Demo/access_token")
echo "cat: ${#token} bytes"

# bash reads a file without starting cat.
token=$(<"$OAUTH/by-name/Demo/access_token")
echo "\$(<file): ${#token} bytes"

# curl with a bearer token, read afresh (and refreshed if needed) per call.
# The header goes through a file descriptor (printf and $(<file) are bash
# builtins), never through curl's arguments: other users can read any
# process's arguments in /proc/PID/cmdline.
curl -sf -H @<(printf 'Authorization: Bearer %s\n' "$(<"$OAUTH/by-name/Demo/access_token")") "$API/userinfo"

# jq over the index: the integrations you are signed in to, and the rest.
jq -r '.[] | "\(.name): \(if .authenticated then "signed in" else .status end)"' "$OAUTH/integrations.json"

# Not signed in: the read fails with "Required key not available".
if ! cat "$OAUTH/by-name/Other/access_token" 2>/dev/null; then
	echo "Other: sign in with: oauthfs login Other"
fi
