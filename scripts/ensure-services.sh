#!/usr/bin/env bash
# Installs the Debian packages the test suite uses: the PostgreSQL and Redis servers (the
# suite starts throwaway instances itself) and Chromium with its driver (admin pages are
# tested in a real browser), and a compose CLI to check docker-compose.yml (no engine needed). The S3-protocol server (moto) comes from PyPI with requirements-dev.txt.
# Idempotent, and quick when everything is present.
set -euo pipefail
missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
{ command -v docker-compose >/dev/null 2>&1 || docker compose version >/dev/null 2>&1; } || missing+=(docker-compose)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${missing[*]} (install them as root)." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
