#!/usr/bin/env bash
# Installs what the test suites and benchmarks need, only what is missing.
# Runs before `npm test` (npm's pretest). It never fails the run by itself: a tool
# it cannot install is named clearly, and the suites that need it say so again.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
tools="$here/.tools"
mkdir -p "$tools"
missing=()

have() { command -v "$1" >/dev/null 2>&1; }
SUDO=""
if [ "$(id -u)" != 0 ] && have sudo; then SUDO="sudo -n"; fi

# command -> Debian package
declare -A pkgs=(
  [redis-server]=redis-server
  [wrk]=wrk
  [promtool]=prometheus
  [chromium]=chromium
  [nginx]=nginx-light
  [haproxy]=haproxy
  [dnsmasq]=dnsmasq-base
  [openssl]=openssl
)
want=()
for cmd in "${!pkgs[@]}"; do
  p=/usr/sbin/$cmd
  if ! have "$cmd" && [ ! -x "$p" ]; then want+=("${pkgs[$cmd]}"); fi
done

if [ ${#want[@]} -gt 0 ]; then
  if have apt-get; then
    echo "ensure-test-deps: installing Debian packages: ${want[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >/dev/null 2>&1 || echo "ensure-test-deps: apt-get update failed"
    # One at a time so that one package that cannot be had does not stop the rest.
    for p in "${want[@]}"; do
      $SUDO apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 \
        || missing+=("$p (apt-get install failed)")
    done
    # nginx and haproxy start system services on install; this machine does not want them.
    for svc in nginx haproxy redis-server; do
      if have service; then $SUDO service "$svc" stop >/dev/null 2>&1 || true; fi
    done
  else
    missing+=("${want[@]} (no apt-get on this machine)")
  fi
fi

# Consul: not in Debian 12; Debian 11 ships consul 1.8.7. Fetch that .deb with a private
# apt state so that the system's sources are never touched, and unpack it under .tools/.
consul_bin="$tools/consul/usr/bin/consul"
if ! have consul && [ ! -x "$consul_bin" ]; then
  if have apt-get && have dpkg-deb; then
    echo "ensure-test-deps: fetching consul from Debian bullseye into .tools/consul"
    work="$tools/apt-bullseye"
    mkdir -p "$work/lists/partial" "$work/archives/partial"
    src=$(ls /etc/apt/sources.list.d/debian.sources 2>/dev/null)
    uri="http://deb.debian.org/debian"; signed="/usr/share/keyrings/debian-archive-keyring.gpg"
    if [ -n "$src" ]; then
      u=$(awk '/^URIs:/{print $2; exit}' "$src"); [ -n "$u" ] && uri=$u
      s=$(awk '/^Signed-By:/{print $2; exit}' "$src"); [ -n "$s" ] && signed=$s
    fi
    echo "deb [signed-by=$signed] $uri bullseye main" > "$work/sources.list"
    opts=(-o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts=/nonexistent
          -o Dir::State::Lists="$work/lists" -o Dir::Cache::Archives="$work/archives"
          -o Debug::NoLocking=1)
    if apt-get "${opts[@]}" update -qq >/dev/null 2>&1 \
       && (cd "$work" && apt-get "${opts[@]}" download consul >/dev/null 2>&1); then
      deb=$(ls "$work"/consul_*.deb | head -1)
      mkdir -p "$tools/consul" && dpkg-deb -x "$deb" "$tools/consul"
    fi
    [ -x "$consul_bin" ] || missing+=("consul (could not download it from Debian bullseye)")
  else
    missing+=("consul (needs apt-get and dpkg-deb)")
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "ensure-test-deps: COULD NOT INSTALL:"
  for m in "${missing[@]}"; do echo "  - $m"; done
  echo "ensure-test-deps: suites that need these will fail and name them."
else
  echo "ensure-test-deps: all test dependencies present"
fi
exit 0
