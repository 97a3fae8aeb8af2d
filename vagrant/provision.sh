#!/usr/bin/env bash
# Provision one handshake-lab VM: `provision.sh server` or `provision.sh client`.
#
# Called by the Vagrantfile as root (shell provisioner), and by tests/vagrant in a Debian chroot.
# Safe to run again: every step checks before it changes anything, or replaces a file whole.
#
#   both roles : apt packages; a venv in /opt/handshake-lab with the project pip-installed from
#                PROJECT_DIR; /usr/local/bin/handshake-lab; the agent token as
#                /etc/handshake-lab/agent-token (mode 0600); the lab-VM marker
#                /etc/handshake-lab/provisioned-vm (root, 0644): only where it exists may
#                handshake-lab put nft holds and sysctls in the VM's own namespace
#                (handshake_lab/topo/vmhold.py); never written in a chroot
#   server     : /etc/systemd/system/handshake-lab-agent.service (from the template beside this
#                script in the project), /etc/handshake-lab/agent.env, enabled and (re)started
#   client     : /usr/local/bin/hslab-peer-run LAB [run options] -> run LAB --peer SERVER:PORT
#
# Environment (the Vagrantfile sets these; defaults in brackets):
#   PROJECT_DIR        project source to install [/vagrant]
#   HSLAB_SERVER_IP    the server's private address, in 198.18.0.0/15 [198.18.1.10]
#   HSLAB_CLIENT_IP    the client's private address, in 198.18.0.0/15 [198.18.1.11]
#   HSLAB_AGENT_PORT   the agent's TCP port [7878]
#   HSLAB_TOKEN_IN     a file holding the agent token, uploaded by Vagrant; installed and then
#                      removed. Without it the server keeps its token or makes a new one; a
#                      client without any token fails. [unset]
#   HSLAB_WHEEL_DIR    install offline from wheels in this directory (pip --no-index) [unset]
#   HSLAB_SKIP_START   1: install and enable the agent but do not start it [0]
#
# In a chroot, or wherever systemd is not running, nothing is started: the unit is installed,
# checked with systemd-analyze when that exists, and enabled offline.
set -euo pipefail

readonly VENV=/opt/handshake-lab
readonly CONF_DIR=/etc/handshake-lab
readonly TOKEN=$CONF_DIR/agent-token
readonly UNIT_NAME=handshake-lab-agent.service
readonly UNIT_DEST=/etc/systemd/system/$UNIT_NAME
readonly MARKER=$CONF_DIR/provisioned-vm
# The first line handshake_lab/topo/vmhold.py checks (MARKER_TEXT there).
readonly MARKER_TEXT="handshake-lab lab VM, provisioned by vagrant/provision.sh"
readonly PACKAGES=(python3 python3-venv iproute2 nftables tcpdump make procps ca-certificates)

ROLE=${1:-${HSLAB_ROLE:-}}
PROJECT_DIR=${PROJECT_DIR:-/vagrant}
SERVER_IP=${HSLAB_SERVER_IP:-198.18.1.10}
CLIENT_IP=${HSLAB_CLIENT_IP:-198.18.1.11}
AGENT_PORT=${HSLAB_AGENT_PORT:-7878}
TOKEN_IN=${HSLAB_TOKEN_IN:-}
WHEEL_DIR=${HSLAB_WHEEL_DIR:-}
SKIP_START=${HSLAB_SKIP_START:-0}

say() { printf 'provision[%s]: %s\n' "${ROLE:-?}" "$*"; }
die() { printf 'provision[%s]: error: %s\n' "${ROLE:-?}" "$*" >&2; exit 1; }

STAGE=
cleanup() { [[ -z $STAGE ]] || rm -rf -- "$STAGE"; }
trap cleanup EXIT

# 198.18.0.0/15 is 198.18.x.y and 198.19.x.y: lab traffic must never look like a real network.
in_lab_range() {
  local a b c d o
  [[ $1 =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || return 1
  IFS=. read -r a b c d <<<"$1"
  for o in "$a" "$b" "$c" "$d"; do
    if ((10#$o > 255)); then
      return 1
    fi
  done
  [[ $a == 198 && ($b == 18 || $b == 19) ]]
}

in_chroot() {
  local rc=2
  if command -v ischroot >/dev/null 2>&1; then
    ischroot && rc=0 || rc=$?
  fi
  case $rc in
    0) return 0 ;;
    1) return 1 ;;
  esac
  # ischroot could not tell: compare our / with PID 1's (no /proc at all: a bare chroot).
  [[ -e /proc/1/root ]] || return 0
  [[ "$(stat -Lc %d:%i /)" != "$(stat -Lc %d:%i /proc/1/root/. 2>/dev/null)" ]]
}

systemd_running() {
  [[ -d /run/systemd/system ]] && ! in_chroot
}

check_settings() {
  case $ROLE in
    server | client) ;;
    *) die "usage: provision.sh server|client (got '${ROLE}')" ;;
  esac
  in_lab_range "$SERVER_IP" || die "HSLAB_SERVER_IP=$SERVER_IP is not in 198.18.0.0/15"
  in_lab_range "$CLIENT_IP" || die "HSLAB_CLIENT_IP=$CLIENT_IP is not in 198.18.0.0/15"
  [[ $SERVER_IP != "$CLIENT_IP" ]] || die "HSLAB_SERVER_IP and HSLAB_CLIENT_IP must differ"
  if ! [[ $AGENT_PORT =~ ^[0-9]{1,5}$ ]] || ((10#$AGENT_PORT < 1 || 10#$AGENT_PORT > 65535)); then
    die "HSLAB_AGENT_PORT=$AGENT_PORT is not a port number"
  fi
  [[ $(id -u) -eq 0 ]] || die "must run as root"
  [[ -f $PROJECT_DIR/pyproject.toml ]] ||
    die "PROJECT_DIR=$PROJECT_DIR holds no pyproject.toml (is the synced folder mounted?)"
  if [[ -n $WHEEL_DIR && ! -d $WHEEL_DIR ]]; then
    die "HSLAB_WHEEL_DIR=$WHEEL_DIR is not a directory"
  fi
}

install_packages() {
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed ||
      missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    say "apt packages already installed"
    return
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_project() {
  if [[ ! -x $VENV/bin/python ]]; then
    say "creating venv $VENV"
    python3 -m venv "$VENV"
  fi
  # Build from a private copy: the synced folder may be read-only (a chroot bind mount) or
  # slow (vboxsf), and pip must not write build files into the student's checkout.
  STAGE=$(mktemp -d /tmp/hslab-src.XXXXXX)
  local stage=$STAGE
  tar -C "$PROJECT_DIR" \
    --exclude=./.git --exclude=./.venv --exclude=./.vagrant --exclude='*/__pycache__' \
    --exclude=./.mypy_cache --exclude=./.pytest_cache --exclude=./.ruff_cache \
    --exclude=./.hypothesis --exclude=./dist --exclude=./build --exclude='*.pcap' \
    -cf - . | tar -C "$stage" -xf -
  local pip=("$VENV/bin/pip" install --quiet --disable-pip-version-check)
  if [[ -n $WHEEL_DIR ]]; then
    pip+=(--no-index --find-links "$WHEEL_DIR")
  fi
  say "installing the project from $PROJECT_DIR into $VENV"
  # Dependencies first (no-op when present), then the project itself reinstalled so that a
  # re-provision picks up changed sources even when the version number did not change.
  "${pip[@]}" "$stage"
  "${pip[@]}" --force-reinstall --no-deps "$stage"
  ln -sfn "$VENV/bin/handshake-lab" /usr/local/bin/handshake-lab
  "$VENV/bin/handshake-lab" --help >/dev/null || die "the installed handshake-lab does not start"
}

write_file() { # write_file MODE DEST: stdin to DEST atomically, with MODE
  local mode=$1 dest=$2 tmp
  tmp=$(mktemp "$dest.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$dest"
}

install_token() {
  install -d -m 0755 "$CONF_DIR"
  if [[ -n $TOKEN_IN && -s $TOKEN_IN ]]; then
    # The token goes file -> file: never through a command line or the process list.
    (umask 077 && write_file 0600 "$TOKEN" <"$TOKEN_IN")
    rm -f -- "$TOKEN_IN"
    say "agent token installed from the uploaded file"
  elif [[ -s $TOKEN ]]; then
    chmod 0600 "$TOKEN"
    say "agent token kept"
  elif [[ $ROLE == server ]]; then
    (umask 077 && "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))' |
      write_file 0600 "$TOKEN")
    say "agent token generated"
  else
    die "no agent token: set HSLAB_TOKEN_IN to a file holding the server's token"
  fi
  chown root:root "$TOKEN"
}

verify_unit() {
  if ! command -v systemd-analyze >/dev/null 2>&1; then
    say "systemd-analyze not available here: unit installed without verification"
    return
  fi
  local out
  if out=$(systemd-analyze verify "$UNIT_DEST" 2>&1); then
    say "unit verified by systemd-analyze"
  else
    die "systemd-analyze verify $UNIT_DEST failed: $out"
  fi
}

enable_agent() {
  if systemd_running; then
    systemctl daemon-reload
    systemctl enable --quiet "$UNIT_NAME"
    if [[ $SKIP_START == 1 ]]; then
      say "agent enabled, not started (HSLAB_SKIP_START=1)"
      return
    fi
    ip -4 -o addr show | grep -qF " $SERVER_IP/" ||
      say "warning: $SERVER_IP is on no interface yet; the agent retries until it is"
    # restart, not start: a re-provision must run the freshly installed code and settings.
    systemctl restart "$UNIT_NAME"
    wait_for_agent
  elif command -v systemctl >/dev/null 2>&1; then
    systemctl enable --quiet "$UNIT_NAME"
    say "systemd is not running (chroot?): agent enabled offline, not started"
  else
    install -d -m 0755 /etc/systemd/system/multi-user.target.wants
    ln -sfn "$UNIT_DEST" "/etc/systemd/system/multi-user.target.wants/$UNIT_NAME"
    say "no systemd here (chroot?): agent enabled by symlink, not started"
  fi
}

wait_for_agent() {
  local i
  for ((i = 0; i < 40; i++)); do
    if ss -Hltn "sport = :$AGENT_PORT" | grep -qF "$SERVER_IP:$AGENT_PORT"; then
      say "agent listening on $SERVER_IP:$AGENT_PORT"
      return
    fi
    sleep 0.5
  done
  systemctl --no-pager status "$UNIT_NAME" >&2 || true
  journalctl --no-pager -u "$UNIT_NAME" -n 30 >&2 || true
  die "the agent is not listening on $SERVER_IP:$AGENT_PORT after 20 s"
}

setup_server() {
  local template=$PROJECT_DIR/vagrant/$UNIT_NAME
  [[ -f $template ]] || die "unit template $template is missing"
  # Only names and where to listen; the token stays in its own root-only file.
  write_file 0644 "$CONF_DIR/agent.env" <<EOF
# Written by vagrant/provision.sh; read by $UNIT_NAME.
HSLAB_AGENT_BIND=$SERVER_IP
HSLAB_AGENT_PORT=$AGENT_PORT
EOF
  install -d -m 0755 /etc/systemd/system
  write_file 0644 "$UNIT_DEST" <"$template"
  verify_unit
  enable_agent
}

setup_client() {
  write_file 0644 "$CONF_DIR/peer.env" <<EOF
# Written by vagrant/provision.sh; read by hslab-peer-run.
HSLAB_PEER=$SERVER_IP:$AGENT_PORT
EOF
  write_file 0755 /usr/local/bin/hslab-peer-run <<'EOF'
#!/usr/bin/env bash
# hslab-peer-run LAB [run options]: run LAB from this VM against the agent on the server VM.
# Installed by vagrant/provision.sh. The token reaches handshake-lab through the environment,
# read from a root-only file, so it never shows on a command line.
set -euo pipefail
if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  echo "usage: hslab-peer-run LAB [handshake-lab run options, e.g. --loop uvloop --json]" >&2
  exit 2
fi
if [[ $(id -u) -ne 0 ]]; then
  exec sudo -- "$0" "$@"
fi
# shellcheck source=/dev/null
. /etc/handshake-lab/peer.env
HSLAB_AGENT_TOKEN=$(</etc/handshake-lab/agent-token)
export HSLAB_AGENT_TOKEN
lab=$1
shift
exec /opt/handshake-lab/bin/handshake-lab run "$lab" --peer "$HSLAB_PEER" "$@"
EOF
  say "client helper: hslab-peer-run LAB (peer $SERVER_IP:$AGENT_PORT)"
}

install_marker() {
  # A chroot is somebody's machine, not a lab VM: no marker there, so the host rule stands.
  if in_chroot; then
    say "chroot: no lab-VM marker (holds stay confined to lab namespaces)"
    return
  fi
  install -d -m 0755 -o root -g root "$CONF_DIR"
  printf '%s\nrole=%s\n' "$MARKER_TEXT" "$ROLE" | write_file 0644 "$MARKER"
  chown root:root "$MARKER"
  say "lab-VM marker $MARKER written"
}

# ifup@eth1.service failed on the VMs (the lab network still worked): udev starts the ifupdown
# hotplug unit for every new NIC at boot, whose ExecStart is `ifup --allow=hotplug eth1;
# ifquery --state eth1`. At that moment eth1 has no stanza (Vagrant writes `auto eth1` + a static
# stanza later, over ssh, and runs `ifup eth1` itself), so ifup skips it and `ifquery --state`
# exits 1: the unit stays failed and the system "degraded", although eth1 came up right after.
# And with `auto` only, every later boot races networking.service against the same unit.
# Fix: declare the lab interface allow-hotplug as well (one owner: the hotplug unit, which now
# configures it at boot), then re-run the unit, which finds eth1 configured and succeeds.
settle_lab_interface() {
  local ip dev
  systemd_running || return 0
  [[ $ROLE == server ]] && ip=$SERVER_IP || ip=$CLIENT_IP
  dev=$(ip -4 -o addr show | awk -v ip="$ip" '{split($4, a, "/")} a[1] == ip {print $2; exit}')
  [[ -n $dev ]] || { say "warning: $ip is on no interface yet"; return 0; }
  grep -qsE "^iface $dev inet" /etc/network/interfaces || return 0 # not ifupdown's (netplan...)
  if ! grep -qsxF "allow-hotplug $dev" "/etc/network/interfaces.d/hslab-$dev"; then
    printf '# Written by vagrant/provision.sh: see settle_lab_interface there.\nallow-hotplug %s\n' \
      "$dev" | write_file 0644 "/etc/network/interfaces.d/hslab-$dev"
  fi
  if systemctl is-failed --quiet "ifup@$dev.service"; then
    systemctl reset-failed "ifup@$dev.service"
    systemctl start "ifup@$dev.service" && say "ifup@$dev.service: active ($dev is allow-hotplug)"
  fi
}

main() {
  check_settings
  if in_chroot; then
    say "running in a chroot: services are installed but not started"
  fi
  install_packages
  install_project
  install_token
  install_marker
  settle_lab_interface
  case $ROLE in
    server) setup_server ;;
    client) setup_client ;;
  esac
  say "done"
}

main "$@"
