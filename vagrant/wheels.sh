#!/usr/bin/env bash
# wheels.sh [PROJECT] [WHEELDIR]: an offline wheel directory for vagrant/provision.sh
# (HSLAB_WHEEL_DIR, pip --no-index --find-links): the project's wheel, its dependencies and its
# build backend (hatchling + deps), for the VMs' Python (CPython 3.11, Debian 12, x86_64).
# Needs PyPI on this host; the VMs need nothing. Idempotent (pip skips what is there).
#
#   PROJECT   [the current directory]      WHEELDIR [PROJECT/wheelhouse]: inside the checkout, so the
#             rsync synced folder carries it to /vagrant/wheelhouse (it is not in the excludes)
#   PYTHON    host interpreter running pip [python3]
# Then: HSLAB_WHEEL_DIR=/vagrant/wheelhouse vagrant up   (a guest path; needs the Vagrantfile
# passes HSLAB_WHEEL_DIR on to provision.sh).
set -euo pipefail
PROJECT=$(realpath "${1:-$PWD}")
WD=${2:-$PROJECT/wheelhouse}
PY=${PYTHON:-python3}
t0=$(date +%s)
mkdir -p "$WD"
pip=("$PY" -m pip --disable-pip-version-check)
target=(--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311)
for p in manylinux_2_36 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_17 \
  manylinux2014 manylinux_2_12 manylinux2010 manylinux_2_5 manylinux1; do
  target+=(--platform "${p}_x86_64")
done
# Runtime dependencies, read from pyproject.toml ([project] dependencies), plus the build backend.
mapfile -t deps < <("$PY" - "$PROJECT/pyproject.toml" <<'EOF'
import sys, tomllib
d = tomllib.load(open(sys.argv[1], "rb"))
for r in d["project"].get("dependencies", []) + d["build-system"]["requires"]:
    print(r.split(";")[0].strip())
EOF
)
echo "wheels: downloading ${deps[*]}"
"${pip[@]}" download -q -d "$WD" "${target[@]}" "${deps[@]}"
echo "wheels: building the project's wheel"
"${pip[@]}" wheel -q --no-deps -w "$WD" "$PROJECT"
# Check: an offline install into a throw-away venv must succeed (build isolation included).
tv=$(mktemp -d)
"$PY" -m venv "$tv"
"$tv/bin/pip" install -q --disable-pip-version-check --no-index --find-links "$WD" "$PROJECT"
"$tv/bin/handshake-lab" --help >/dev/null
rm -rf "$tv"
ls "$WD"
echo "wheels: $(find "$WD" -maxdepth 1 -type f | wc -l) files, $(du -sh "$WD" | cut -f1) in $WD; offline install checked; took $(($(date +%s) - t0)) s"
