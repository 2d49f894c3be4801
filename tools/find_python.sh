#!/bin/sh
# Prints a Python >= 3.12 (and < 3.14) for the project's venv, or says what to do and fails.
# Order: $PYTHON, python3.12 / python3.13 / python3 on PATH, then pyenv's installed versions
# (whose python3.12 shim refuses to run unless that version is selected, while the
# interpreter under `pyenv root` runs).
ok() { "$1" -c 'import sys; sys.exit(not (3, 12) <= sys.version_info[:2] < (3, 14))' 2>/dev/null; }
for c in ${PYTHON:-} python3.12 python3.13 python3; do
  p=$(command -v "$c" 2>/dev/null) && ok "$p" && { echo "$p"; exit 0; }
done
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for p in $(ls -d "$root"/versions/3.12*/bin/python3 "$root"/versions/3.13*/bin/python3 2>/dev/null); do
    ok "$p" && { echo "$p"; exit 0; }
  done
fi
echo "tgic_jax needs Python 3.12 or 3.13 and found none (python3 is $(python3 --version 2>&1))." >&2
echo "Install one (e.g. 'pyenv install 3.12' or your system's python3.12 package), or run" >&2
echo "make with PYTHON=/path/to/python3.12." >&2
exit 1
