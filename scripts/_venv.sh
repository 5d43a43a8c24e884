# Sourced by scripts/demo and scripts/test: make .venv (if missing) and install the project into it.
# Usage: . scripts/_venv.sh EXTRAS   (EXTRAS like "test,dask" or empty)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3 python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" 2>/dev/null -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY="$candidate"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "streamgmm needs Python 3.11 or newer on PATH" >&2; exit 1; }
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
spec="$ROOT"
[ -n "${1:-}" ] && spec="$ROOT[$1]"
# Reinstall only when the build's inputs changed since the last install into this venv: the
# install is editable, so Python changes need none, but the C kernel (streamgmm/kernels/_fused*) is
# compiled by it.
# An install with more extras covers one with fewer (CI installs the test and docs extras at once).
stamp="$VENV/.streamgmm-installed-${1:-base}"
covered() {
  local done have extra
  for done in "$VENV"/.streamgmm-installed-*; do
    [ -f "$done" ] || continue
    [ -n "$(find "$ROOT/pyproject.toml" "$ROOT/setup.py" "$ROOT"/streamgmm/kernels/_fused* \
        -newer "$done" ! -name '*.so' 2>/dev/null | head -1)" ] && continue
    have=",${done##*/.streamgmm-installed-},"
    for extra in ${1//,/ }; do
      [[ "$have" == *",$extra,"* ]] || continue 2
    done
    return 0
  done
  return 1
}
# uv (from the package index, a few seconds) installs the same versions as pip in a fraction of
# pip's time: it downloads in parallel and does not byte-compile the 150 packages, most of whose
# modules the suite never imports. Where uv cannot be had or fails, pip installs, likewise.
install() {
  local pip=("$VENV/bin/python" -m pip install --disable-pip-version-check --no-compile)
  if "${pip[@]}" uv && "$VENV/bin/python" -m uv pip install --python "$VENV/bin/python" -e "$spec"; then
    return 0
  fi
  echo "uv could not install streamgmm: installing with pip" >&2
  "${pip[@]}" -e "$spec"
}
if ! covered "${1:-}"; then
  echo "installing streamgmm${1:+[$1]} into $VENV" >&2
  log="$VENV/install.log"
  if ! install >"$log" 2>&1; then
    cat "$log" >&2
    echo "installing streamgmm failed (log above, also in $log)" >&2
    exit 1
  fi
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
# So the scripts' Python processes cache each module's bytecode when they first import it (in
# __pycache__, ignored by git), even where the environment says not to write bytecode, under
# which every process (the suite starts hundreds) would compile every module it imports again.
unset PYTHONDONTWRITEBYTECODE
