#!/usr/bin/env bash
# What `make e2e` needs beyond `make install`: a Chromium binary and Playwright for Python in the venv.
# Installs what is missing and says so; where it cannot, exits non-zero with a one-line reason.
# Usage: tests/e2e/install.sh PYTHON   (PYTHON: the venv's interpreter)
set -euo pipefail
PY=${1:?usage: tests/e2e/install.sh PYTHON}

fail() { echo "e2e: cannot run the browser tests: $*" >&2; exit 1; }

find_chromium() {
    local candidate
    for candidate in "${E2E_CHROMIUM:-}" chromium chromium-browser google-chrome; do
        [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 && { command -v "$candidate"; return 0; }
    done
    return 1
}

if ! find_chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "e2e: no Chromium found; installing Debian's chromium (apt-get update && apt-get install -y chromium)"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/tmp/e2e-apt.log 2>&1 \
            || fail "apt-get install chromium failed (log: /tmp/e2e-apt.log: $(tail -n 1 /tmp/e2e-apt.log))"
    else
        fail "no Chromium found and apt-get is not usable here (not root?): install chromium (sudo apt-get install chromium) or set E2E_CHROMIUM=/path/to/chrome"
    fi
    find_chromium >/dev/null || fail "chromium was installed but is not on PATH"
fi
echo "e2e: browser $(find_chromium) ($("$(find_chromium)" --version 2>/dev/null | head -n 1))"

if ! "$PY" -c "import playwright" >/dev/null 2>&1; then
    echo "e2e: installing Playwright for Python into the venv (pip install -e '.[e2e]'; its own browser download is not used)"
    "$PY" -m pip install --quiet -e ".[e2e]" >/tmp/e2e-pip.log 2>&1 \
        || fail "pip install -e '.[e2e]' failed (log: /tmp/e2e-pip.log: $(tail -n 1 /tmp/e2e-pip.log))"
fi
echo "e2e: playwright $("$PY" -c 'from importlib.metadata import version; print(version("playwright"))')"
