#!/usr/bin/env bash
# A non-Python Flock client in a few lines of curl: fetch a machine token,
# then list hotlists with it. Run it against `mockflock serve`, then ask
# `mockflock verify --url BASE_URL` what the client did wrong.
#
#   examples/curl/list_hotlists.sh BASE_URL AUDIENCE [CLIENT_ID CLIENT_SECRET]
#
# Prints the HTTP status of the hotlist request.
set -euo pipefail

base_url="${1:?usage: $0 BASE_URL AUDIENCE [CLIENT_ID CLIENT_SECRET]}"
audience="${2:?usage: $0 BASE_URL AUDIENCE [CLIENT_ID CLIENT_SECRET]}"
client_id="${3:-demo-hotlists}"
client_secret="${4:-demo-hotlists-secret}"

# client_secret_basic: the secret travels in the Authorization header only.
response=$(curl --silent --show-error --user "$client_id:$client_secret" \
  --data grant_type=client_credentials --data-urlencode "audience=$audience" \
  "$base_url/oauth/token")
token=$(printf '%s' "$response" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
if [ -z "$token" ]; then
  echo "token request failed: $response" >&2
fi

curl --silent --output /dev/null --write-out '%{http_code}\n' \
  --header "Authorization: Bearer $token" "$base_url/api/v3/hotlists"
