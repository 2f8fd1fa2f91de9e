# Shared by scripts/serve and scripts/test: create .venv with Python 3.11 or
# newer and install mockflock with its test extras when pyproject.toml
# changed since the last install. Both scripts install the same set, so one
# never reinstalls the package under the other while it runs.
ensure_venv() {
    local extra=test
    local python
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            python=$candidate
            break
        fi
    done
    if [ -z "${python:-}" ]; then
        echo "mockflock needs Python 3.11 or newer; install it and run this script again." >&2
        exit 1
    fi
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    local stamp=".venv/.installed${extra:+-$extra}"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        .venv/bin/python -m pip install --quiet --upgrade pip
        .venv/bin/python -m pip install --quiet -e ".${extra:+[$extra]}"
        touch "$stamp"
    fi
}
