#!/usr/bin/env bash
# Run the demo shop on embedded PostgreSQL + Redis; all state under $VITRINE_HOME (./var).
set -euo pipefail
cd "$(dirname "$0")/.."
export VITRINE_HOME="${VITRINE_HOME:-$PWD/var}"
mkdir -p "$VITRINE_HOME"
exec .venv/bin/python manage.py rundemo "$@"
