#!/usr/bin/env bash
# The README's test command: install hpc-ilastik with its test extras, then run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --upgrade pip
python3 -m pip install --quiet '.[test]'
python3 -m pytest -q -p no:cacheprovider tests
