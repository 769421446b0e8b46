#!/usr/bin/env bash
# The lint and type gate: ruff (lint and format) and mypy (strict, with mypy-zope), as configured in
# pyproject.toml.  Any finding fails.  Needs the venv with the test extra (scripts/setup.sh --test or --unit).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "lint: ruff check"
.venv/bin/ruff check imgfac_twisted tests bench scripts twisted
echo "lint: ruff format --check"
.venv/bin/ruff format --check imgfac_twisted tests bench scripts twisted
echo "lint: mypy"
.venv/bin/mypy
