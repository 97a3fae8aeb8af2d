#!/usr/bin/env bash
# Boot the two lab VMs and run every lab across them, on asyncio and on uvloop.
#
# For students' and teachers' machines (VirtualBox or libvirt). CI never runs this: the
# project's own machines must not boot VMs. The Vagrantfile's HSLAB_* settings apply.
#
#   vagrant/run-all-labs.sh             # vagrant up, run everything, print a summary
#   vagrant/run-all-labs.sh --no-up     # the VMs are already up (and provisioned)
#   vagrant/run-all-labs.sh --destroy   # vagrant destroy -f at the end, whatever happened
#   HSLAB_LOOPS=uvloop vagrant/run-all-labs.sh
#   HSLAB_SWEEP=0 vagrant/run-all-labs.sh   # skip the RTT sweep (run by default, after the labs)
#
# Exit status: 0 when every lab passed on every loop (and the sweep), 1 when any failed, 2 on
# a usage error. Each run's full output is kept in .vagrant/hslab-results/LAB.LOOP.log; the
# sweep's (handshake-lab sweep handshake --delay 0,50,200 --json --topology netns on the
# client VM, whose kernel has tc netem) in sweep.json, checked by vagrant/vmcheck.py --sweep.
set -euo pipefail

usage() {
  sed -n '2,13s/^# \{0,1\}//p' "$0" >&2
  exit 2
}

up=1
destroy=0
for arg in "$@"; do
  case $arg in
    --no-up) up=0 ;;
    --destroy) destroy=1 ;;
    -h | --help) usage ;;
    *) echo "run-all-labs: unknown option: $arg" >&2 && usage ;;
  esac
done

if [[ -n ${CI:-} ]]; then
  echo "run-all-labs: refusing to boot VMs under CI (CI=$CI): run it on your own machine" >&2
  exit 2
fi
command -v vagrant >/dev/null 2>&1 || {
  echo "run-all-labs: vagrant is not installed (https://developer.hashicorp.com/vagrant)" >&2
  exit 2
}

cd "$(dirname "$0")/.."
read -r -a loops <<<"${HSLAB_LOOPS:-asyncio uvloop}"
results=.vagrant/hslab-results
mkdir -p "$results"

if ((destroy)); then
  trap 'echo "== vagrant destroy -f"; vagrant destroy -f || true' EXIT
fi

if ((up)); then
  echo "== vagrant up (first time: downloads the box, then provisions both VMs)"
  vagrant up
fi

echo "== labs (handshake-lab list, on the client VM)"
labs=()
while read -r name _; do
  [[ -n $name ]] && labs+=("$name")
done < <(vagrant ssh client -c 'handshake-lab list --json' </dev/null 2>/dev/null | tr -d '\r' |
  python3 -c 'import json, sys
labs = json.load(sys.stdin)["labs"]
for lab in labs:
    if lab.get("peer_refusal"):  # refuses --peer by design: named, not run
        print("not across VMs (by design):", lab["peer_refusal"], file=sys.stderr)
print("\n".join(lab["name"] for lab in labs if not lab.get("peer_refusal")))')
if ((${#labs[@]} == 0)); then
  echo "run-all-labs: the client VM listed no labs (is it provisioned? try: vagrant provision)" >&2
  exit 1
fi
echo "${labs[*]}"

declare -A status
failed=0
for lab in "${labs[@]}"; do
  for loop in "${loops[@]}"; do
    log=$results/$lab.$loop.log
    echo "== $lab ($loop)"
    # Single quotes inside: the lab and loop names are [a-z0-9-] words from `list`.
    set +e
    vagrant ssh client -c "hslab-peer-run '$lab' --loop '$loop'" </dev/null 2>&1 |
      tr -d '\r' | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    status[$lab.$loop]=$rc
    ((rc == 0)) || failed=$((failed + 1))
  done
done

sweep=skipped
if [[ ${HSLAB_SWEEP:-1} != 0 ]]; then
  echo "== sweep handshake --delay 0,50,200 (tc netem in the client VM's namespaces)"
  set +e
  vagrant ssh client -c 'sudo handshake-lab sweep handshake --delay 0,50,200 --json --topology netns' \
    </dev/null 2>/dev/null | tr -d '\r' >"$results/sweep.json"
  rc=${PIPESTATUS[0]}
  python3 vagrant/vmcheck.py --sweep "$results/sweep.json" "$rc"
  checked=$?
  set -e
  if ((checked == 0)); then sweep=pass; else sweep="FAIL($rc)"; failed=$((failed + 1)); fi
fi

echo
echo "== summary (logs in $results/)"
printf '%-18s' lab
printf ' %-8s' "${loops[@]}"
printf '\n'
for lab in "${labs[@]}"; do
  printf '%-18s' "$lab"
  for loop in "${loops[@]}"; do
    rc=${status[$lab.$loop]}
    if ((rc == 0)); then
      printf ' %-8s' pass
    else
      printf ' %-8s' "FAIL($rc)"
    fi
  done
  printf '\n'
done
total=$((${#labs[@]} * ${#loops[@]}))
[[ $sweep == skipped ]] || total=$((total + 1))
echo "sweep: $sweep"
echo "$((total - failed))/$total runs passed"
((failed == 0))
