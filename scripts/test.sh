#!/usr/bin/env bash
# The README's test command: sets everything up on a fresh machine and runs the tests.
#   scripts/test.sh [PYTEST ARGS]          the lint and type gate, then both tiers, everything (what CI runs)
#   scripts/test.sh --unit [PYTEST ARGS]   the gate, then the unit tier alone (tests/unit: fakes, no daemon, no peers)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--unit" ]; then
    shift
    scripts/setup.sh --unit
    scripts/lint.sh
    exec .venv/bin/pytest tests/unit "$@"
fi
scripts/setup.sh --test
scripts/lint.sh
mkdir -p test-artifacts
exec .venv/bin/pytest "$@"
