#!/usr/bin/env bash
# Idempotent setup: a virtual environment in .venv with everything the app and the tests need,
# plus Debian's Chromium for the browser test when apt is available.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
  echo "$want" > "$stamp"
fi

# numba compiles umap-learn's code when it is first used and keeps part of it in its on-disk cache:
# fill that cache here, once per install, rather than in the first map a user asks for
warm=.venv/.numba-cache.sha
if [ "$(cat "$warm" 2>/dev/null)" != "$want" ]; then
  if .venv/bin/python -c "from clipcleaner_core.projection import warm_numba_cache; warm_numba_cache()"; then
    echo "$want" > "$warm"
  else
    echo "setup: could not warm numba's cache; the first map will compile its code itself" >&2
  fi
fi

if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "setup: could not install chromium; the browser test will be skipped" >&2
  else
    echo "setup: run 'sudo apt-get install -y chromium' to enable the browser test" >&2
  fi
fi
