#!/usr/bin/env bash
# Sets everything up and starts the daemon on the embedded default: SQLite
# store, in-process events, mock target and provider; HTTPS with a generated
# self-signed certificate and OAuth on writes.  State and config live in
# ./local (created on first run, with a random OAuth secret for client1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

mkdir -p local
if [ ! -f local/imagefactory.conf ]; then
    secret=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))')
    umask 077
    cat > local/imagefactory.conf <<CONF
{
    "clients": {"client1": "$secret"}
}
CONF
    echo "run-daemon: wrote local/imagefactory.conf with OAuth client 'client1' (its secret is in that file)"
fi
exec .venv/bin/twistd -n imagefactory --rest --config local/imagefactory.conf --state_dir local/state "$@"
