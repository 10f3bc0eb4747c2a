#!/usr/bin/env bash
# Run the whole suite against real PostgreSQL+pgvector and Redis.
# Embedded servers (under $VITRINE_HOME, default ./var/test) unless DATABASE_URL /
# CELERY_BROKER_URL point at running ones.
set -euo pipefail
cd "$(dirname "$0")/.."
export VITRINE_HOME="${VITRINE_TEST_HOME:-$PWD/var/test}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export DJANGO_SETTINGS_MODULE=config.settings.test
mkdir -p "$VITRINE_HOME"
# Test folders (tmp_path) under the test home, not /tmp/pytest-of-$USER: every pytest session that starts on
# the machine makes that folder private again, and the embedded PostgreSQL of a test's own home runs as
# another user that must reach its data. A --basetemp given here wins.
exec .venv/bin/python -m pytest --basetemp "$VITRINE_HOME/pytest-tmp" "$@"
