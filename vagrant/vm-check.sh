#!/usr/bin/env bash
# vm-check.sh (`make vm-check`): boot the two lab VMs, run every built-in lab on both event
# loops across them, confirm each held state with a second reader, print a summary, and destroy
# everything it made - also on failure, Ctrl-C and SIGTERM. Not part of `make test`.
#
#   1. box      vagrant/make-box.sh (debootstrap, offline box; built once, then reused)
#   2. source   the checkout's files (tracked + new, not ignored) copied to $VMR_DIR/src, with a
#               wheelhouse built from them (vagrant/wheels.sh): the VMs install offline from it
#   3. libvirt  with the libvirt provider, libvirtd/virtlogd run inside the network namespace
#               $VMR_NS made for this check (vagrant/libvirt-netns.sh), so their bridges, NAT
#               rules and dnsmasq never touch this machine's network; qemu runs at nice 19
#   4. up       vagrant up (both VMs, provisioned offline with HSLAB_WHEEL_DIR)
#   5. labs     every lab of `handshake-lab list` x {asyncio, uvloop}: `hslab-peer-run LAB
#               --json` on the client VM, while vagrant/ss-sampler.sh reads `ss` on each VM
#   5b. sweep   `handshake-lab sweep handshake --delay 0,50,200 --json --topology netns` on the
#               client VM (its kernel has tc netem; the runs and the sweep's page are kept
#               in $OUT/sweep-runs)
#   6. summary  vagrant/vmcheck.py: lab x loop, pass/fail, seconds, held states seen by ss;
#               the sweep: the client's SYN_SENT grows with the RTT added, its "answer
#               after" within the kernel's measured srtt
#   7. down     vagrant destroy -f, libvirt-netns.sh down (daemons stopped by PID, namespace
#               deleted); VMR_KEEP=1 keeps the VMs up for a look (then: vm-check.sh down)
#
# Settings: VMR_DIR [/var/cache/hslab-vm], VMR_NS [vmr-check], HSLAB_PROVIDER [libvirt when
# libvirtd is installed, else virtualbox], HSLAB_LIBVIRT_DRIVER [kvm when /dev/kvm works, else
# qemu], HSLAB_LOOPS ["asyncio uvloop"], HSLAB_LABS [every lab], HSLAB_SWEEP [1; 0 skips 5b].
# Needs root (libvirt, namespaces). Exit status: 0 when every run passed and every held state
# was confirmed, 1 otherwise, 2 when the machine cannot run the check at all.
set -euo pipefail
D=$(dirname "$(realpath "$0")")
ROOT=$(realpath "$D/..")
# Not under /root or a home directory: qemu runs as its own user and must reach the disks.
export VMR_DIR=${VMR_DIR:-/var/cache/hslab-vm}
export VMR_NS=${VMR_NS:-vmr-check}
W=$VMR_DIR
SRC=$W/src
OUT=$W/vm-check
BOX=${VMR_BOX:-hslab/bookworm-local}
BOXFILE=$W/box/hslab-bookworm.box
LOGS=$OUT/logs
SSH_CFG=$OUT/ssh-config
read -r -a LOOPS <<<"${HSLAB_LOOPS:-asyncio uvloop}"

say() { printf 'vm-check: %s\n' "$*" >&2; }
die() { say "$*"; exit 2; }
t_start=$(date +%s)
timed() { # timed NAME CMD...: run, log "TIMING NAME Ns rc=N"
  local name=$1 s rc=0; shift; s=$(date +%s)
  "$@" || rc=$?
  printf 'TIMING %-12s %4d s rc=%d\n' "$name" "$(($(date +%s) - s))" "$rc" | tee -a "$OUT/timings.txt" >&2
  return "$rc"
}

# -- where we are ----------------------------------------------------------------------------
[[ -z ${CI:-} ]] || die "refusing to boot VMs under CI (CI=$CI)"
[[ $(id -u) -eq 0 ]] || die "needs root (libvirt, network namespaces): sudo make vm-check"
command -v vagrant >/dev/null || die "vagrant is not installed (apt install vagrant vagrant-libvirt)"
PROVIDER=${HSLAB_PROVIDER:-}
if [[ -z $PROVIDER ]]; then
  if command -v libvirtd >/dev/null; then PROVIDER=libvirt
  elif command -v VBoxManage >/dev/null; then PROVIDER=virtualbox
  else die "no VM provider: apt install libvirt-daemon-system qemu-system-x86 vagrant-libvirt"
  fi
fi
DRIVER=${HSLAB_LIBVIRT_DRIVER:-}
if [[ -z $DRIVER ]]; then
  # /dev/kvm can exist on a CPU without vmx/svm (qemu then fails with "Permission denied").
  if [[ -w /dev/kvm ]] && grep -Eqw 'vmx|svm' /proc/cpuinfo; then DRIVER=kvm; else DRIVER=qemu; fi
fi
if [[ $PROVIDER == libvirt ]]; then
  for tool in virsh libvirtd virtlogd qemu-system-x86_64 qemu-img debootstrap; do
    command -v "$tool" >/dev/null || die "$tool not found; see vagrant/README.md (packages)"
  done
fi

mkdir -p "$OUT" "$LOGS"
if [[ $PROVIDER == libvirt ]]; then
  # libvirt's qemu user opens the images in $VMR_DIR/pool: every directory above must let it by.
  p=$(realpath "$W")
  while [[ $p != / ]]; do
    [[ $(stat -c %A "$p") == ?????????[xt] ]] ||
      die "$p is not searchable by others: qemu cannot reach the VM disks; set VMR_DIR elsewhere"
    p=$(dirname "$p")
  done
fi
rm -rf "$OUT"/sweep.* "$OUT"/sweep-runs
rm -f "$OUT"/*.jsonl "$OUT"/*.err "$OUT"/runs.tsv "$OUT"/ss.*.log "$OUT/timings.txt" "$LOGS/vm-state.log"
VENV=(env VAGRANT_HOME="$W/vagrant.d" VAGRANT_CHECKPOINT_DISABLE=1 HSLAB_PROVIDER="$PROVIDER"
      HSLAB_LIBVIRT_DRIVER="$DRIVER" HSLAB_WHEEL_DIR=/vagrant/wheelhouse)
if [[ $PROVIDER == libvirt || -n ${VMR_BOX:-} ]]; then VENV+=(HSLAB_BOX="$BOX"); fi
inns() { if [[ $PROVIDER == libvirt ]]; then ip netns exec "$VMR_NS" "$@"; else "$@"; fi; }
vv() { (cd "$SRC" && inns "${VENV[@]}" vagrant "$@"); }
sshx() { inns ssh -F "$SSH_CFG" -o LogLevel=ERROR "$@"; }
# shellcheck disable=SC2317  # stage runs through timed
stage() { # the checkout as it is now (committed or not), and wheels built from it
  rm -rf "$SRC"; mkdir -p "$SRC"
  (cd "$ROOT" && git ls-files -z -c -o --exclude-standard) |
    (cd "$ROOT" && rsync -a --from0 --files-from=- . "$SRC/")
  "$D/wheels.sh" "$SRC" "$SRC/wheelhouse"
}
clean() { tr '\r' '\n' | sed 's/\x1b\[[0-9;]*[A-Za-z]//g' | grep -v -e 'Progress:' -e '^$' || true; }

# -- teardown, whatever happens --------------------------------------------------------------
down() {
  trap - EXIT INT TERM
  set +e
  if [[ -f $SSH_CFG ]]; then
    for vm in server client; do
      sshx "$vm" 'sudo bash /vagrant/vagrant/ss-sampler.sh stop /tmp/hslab-ss.log' 2>/dev/null
    done
  fi
  if [[ -d $SRC/.vagrant/machines ]] && { [[ $PROVIDER != libvirt ]] ||
    ip netns list | grep -qw "^$VMR_NS"; }; then
    timed destroy vv destroy -f 2>&1 | clean >>"$LOGS/destroy.log"
  fi
  [[ $PROVIDER == libvirt ]] && timed netns-down "$D/libvirt-netns.sh" down >>"$LOGS/netns.log" 2>&1
  say "left behind: namespaces [$(ip netns list | grep -w "^$VMR_NS" || true)]" \
    "qemu [$(pgrep -d, qemu-system || true)]"
  say "total $(($(date +%s) - t_start)) s; logs in $OUT"
}
if [[ ${1:-} == down ]]; then down; exit 0; fi
if [[ -z ${VMR_KEEP:-} ]]; then trap down EXIT; fi
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# -- 1. box, 2. source and wheels -----------------------------------------------------------
if [[ $PROVIDER == libvirt ]]; then
  timed make-box nice -n 19 "$D/make-box.sh" "$BOXFILE" >"$LOGS/make-box.log" 2>&1 ||
    die "make-box failed: see $LOGS/make-box.log"
fi
timed source stage >"$LOGS/wheels.log" 2>&1 || die "staging/wheels failed: see $LOGS/wheels.log"

# -- 3. libvirt in its namespace, 4. up -----------------------------------------------------
if [[ $PROVIDER == libvirt ]]; then
  timed netns-up "$D/libvirt-netns.sh" up >"$LOGS/netns.log" 2>&1 ||
    { cat "$LOGS/netns.log" >&2; exit 2; }
  if ! vv box list 2>/dev/null | grep -q "^$BOX "; then
    timed box-add vv box add --name "$BOX" "$BOXFILE" 2>&1 | clean >"$LOGS/box-add.log"
  fi
fi
renice_qemu() { # the VMs yield to the other work on this machine
  local pid
  while sleep 5; do
    for pid in $(ip netns pids "$VMR_NS" 2>/dev/null); do
      [[ $(ps -o comm= -p "$pid" 2>/dev/null) == qemu-system* ]] && renice -n 19 -p "$pid" >/dev/null
    done
  done
}
if [[ $PROVIDER == libvirt ]]; then renice_qemu & RENICE=$!; fi
rc=0
timed up vv up 2>&1 | clean >"$LOGS/vagrant-up.log" || rc=$?
[[ -n ${RENICE:-} ]] && kill "$RENICE" 2>/dev/null
if ((rc != 0)) || ! grep -q 'provision\[client\]: done' "$LOGS/vagrant-up.log" ||
  ! grep -q 'provision\[server\]: done' "$LOGS/vagrant-up.log"; then
  tail -n 30 "$LOGS/vagrant-up.log" >&2
  say "vagrant up failed (log: $LOGS/vagrant-up.log)"
  exit 1
fi
vv ssh-config >"$SSH_CFG" 2>/dev/null
for vm in server client; do
  {
    echo "== $vm"
    sshx "$vm" 'ls -l /etc/handshake-lab/provisioned-vm; sudo systemctl is-system-running;
      sudo systemctl --no-pager --failed --plain --no-legend; ip -br -4 addr show eth1;
      sudo handshake-lab doctor | grep -A3 netem'
  } >>"$LOGS/vm-state.log" 2>&1 || true
  sshx "$vm" 'sudo bash /vagrant/vagrant/ss-sampler.sh start /tmp/hslab-ss.log'
done
sed 's/^/  /' "$LOGS/vm-state.log" >&2

# -- 5. every lab on every loop --------------------------------------------------------------
if [[ -n ${HSLAB_LABS:-} ]]; then
  read -r -a labs <<<"$HSLAB_LABS"
else
  # Labs that refuse --peer by design (list --json's peer_refusal) are named, not run.
  listing=$(sshx client 'handshake-lab list --json')
  mapfile -t labs < <(python3 -c 'import json, sys
print("\n".join(l["name"] for l in json.load(sys.stdin)["labs"] if not l.get("peer_refusal")))' <<<"$listing")
  while IFS= read -r line; do [[ -z $line ]] || say "not across VMs (by design): $line"; done < <(
    python3 -c 'import json, sys
print("\n".join(l["peer_refusal"] for l in json.load(sys.stdin)["labs"] if l.get("peer_refusal")))' <<<"$listing")
fi
((${#labs[@]})) || { say "the client VM lists no labs"; exit 1; }
say "${#labs[@]} labs x ${#LOOPS[@]} loops"
for lab in "${labs[@]}"; do
  for loop in "${LOOPS[@]}"; do
    s=$(date +%s.%N); rc=0
    sshx client "sudo hslab-peer-run '$lab' --loop '$loop' --json" </dev/null \
      >"$OUT/$lab.$loop.jsonl" 2>"$OUT/$lab.$loop.err" || rc=$?
    secs=$(awk -v s="$s" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
    printf '%s\t%s\t%s\t%s\n' "$lab" "$loop" "$rc" "$secs" >>"$OUT/runs.tsv"
    say "$lab $loop: rc=$rc ${secs}s"
  done
done
# -- 5b. the RTT sweep (netem lives in the VMs' kernels, not necessarily on this machine) -------
if [[ ${HSLAB_SWEEP:-1} != 0 ]]; then
  rc=0
  s=$(date +%s)
  sshx client 'sudo rm -rf /tmp/hslab-sweep && sudo mkdir /tmp/hslab-sweep &&
    sudo handshake-lab sweep handshake --delay 0,50,200 --json --topology netns \
      --save-dir /tmp/hslab-sweep --html /tmp/hslab-sweep/sweep.html' </dev/null >"$OUT/sweep.json" 2>"$OUT/sweep.err" || rc=$?
  echo "$rc" >"$OUT/sweep.rc"
  mkdir -p "$OUT/sweep-runs"
  sshx client 'sudo tar -C /tmp/hslab-sweep -cf - .' </dev/null | tar -C "$OUT/sweep-runs" -xf - ||
    say "could not copy the sweep's runs"
  say "sweep handshake --delay 0,50,200: rc=$rc $(($(date +%s) - s))s"
fi

for vm in server client; do
  sshx "$vm" 'sudo bash /vagrant/vagrant/ss-sampler.sh stop /tmp/hslab-ss.log;
    sudo cat /tmp/hslab-ss.log' >"$OUT/ss.$vm.log"
  sshx "$vm" 'sudo nft list tables; cat /proc/sys/net/ipv4/ip_local_port_range' \
    >"$LOGS/after.$vm.txt" 2>&1 || true
done

# -- 6. summary ------------------------------------------------------------------------------
status=0
python3 "$D/vmcheck.py" "$OUT" || status=$?
exit "$status"
