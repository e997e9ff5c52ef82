#!/usr/bin/env bash
# Makes what compose.yaml mounts and the repository does not hold, where it is missing:
#   tls/gateway.pem                  a self-signed certificate and its key, for local use only
#   secrets/gateway_api_key          a random key for POST /v1/events
#   secrets/gateway_cookie_secret    a random secret that signs the first-party cookies
#   secrets/redis.conf               a random Redis password (requirepass), and with it
#   secrets/outbox.env               GATEWAY_OUTBOX_URL for the replicas
# and says so if secrets/tiktok_access_token (your Events API token) is still missing.
# Usage: deploy/setup.sh [DIRECTORY]   (default: this folder; existing files are kept)
#
# To use a real certificate, replace tls/gateway.pem by its chain followed by its key:
#   cat fullchain.pem privkey.pem > deploy/tls/gateway.pem
# The files are made readable by all (0644) because the containers run as their own users
# (gateway: 10001, haproxy: 99) and compose mounts them as they are: keep the folder private.
set -euo pipefail
dir=${1:-$(dirname "$0")}
mkdir -p "$dir/tls" "$dir/secrets"

if [ ! -s "$dir/tls/gateway.pem" ]; then
    work=$(mktemp -d)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
        -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
    cat "$work/cert.pem" "$work/key.pem" > "$dir/tls/gateway.pem"
    rm -rf "$work"
    chmod 0644 "$dir/tls/gateway.pem"
    echo "made $dir/tls/gateway.pem (self-signed, for localhost)"
fi

for name in gateway_api_key gateway_cookie_secret; do
    if [ ! -s "$dir/secrets/$name" ]; then
        openssl rand -hex 32 > "$dir/secrets/$name"
        chmod 0644 "$dir/secrets/$name"
        echo "made $dir/secrets/$name"
    fi
done

if [ ! -s "$dir/secrets/redis.conf" ]; then
    password=$(openssl rand -hex 32)
    echo "requirepass $password" > "$dir/secrets/redis.conf"
    echo "GATEWAY_OUTBOX_URL=redis://:$password@redis:6379/0" > "$dir/secrets/outbox.env"
    chmod 0644 "$dir/secrets/redis.conf"
    chmod 0600 "$dir/secrets/outbox.env"   # read by compose itself, not by a container
    echo "made $dir/secrets/redis.conf and $dir/secrets/outbox.env"
fi

if [ ! -s "$dir/secrets/tiktok_access_token" ]; then
    echo "now write your Events API access token to $dir/secrets/tiktok_access_token"
fi
