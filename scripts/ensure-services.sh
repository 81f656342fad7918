#!/usr/bin/env bash
# Installs what the test suite starts by itself: PostgreSQL server binaries (Debian package).
# The S3-protocol server (moto) comes from PyPI with requirements-dev.txt. Idempotent and quick
# when everything is present.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL server binaries are missing: install the 'postgresql' package (needs root)." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
