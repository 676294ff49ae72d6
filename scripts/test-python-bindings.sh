#!/usr/bin/env bash
# Generates the Python bindings of the SDK and runs mobile-sdk/tests/python/test_bindings.py.
# Without ASSENT_URL/ASSENT_API_KEY it runs the self-checks and the flow against its own mock of
# the device API; with them it also enrolls against that running `assent` server, receives a
# challenge and approves it through the bindings (see the test's docstring).
#
#   scripts/test-python-bindings.sh
#   ASSENT_URL=http://127.0.0.1:8080 ASSENT_API_KEY=... scripts/test-python-bindings.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"

if ! "$python" -c 'import cryptography' 2>/dev/null; then
    "$python" -m pip install --quiet -r mobile-sdk/requirements.txt
fi

out="${BINDINGS_DIR:-target/bindings}"
LANGUAGES=python scripts/bindings.sh "$out"
ASSENT_BINDINGS_DIR="$root/$out/python" "$python" mobile-sdk/tests/python/test_bindings.py
