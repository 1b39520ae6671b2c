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
  [prometheus]=prometheus
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

# The Debian archive this system's apt already uses: "URI<TAB>KEY" of the first source
# of type deb with a plain suite (not -security, -updates, -backports), from the deb822
# files (/etc/apt/sources.list.d/*.sources) and the one-line files (/etc/apt/sources.list,
# /etc/apt/sources.list.d/*.list). KEY is a keyring path, or empty when the source names
# none (apt's trusted keys then apply); a key written inline in a .sources file is saved
# to $1/inline-key.asc. Prints nothing when there is no such source: no address is made up.
system_debian_source() {
  local keydir=$1 f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v keyfile="$keydir/inline-key.asc" '
      function flush() {
        if (types ~ /(^| )deb( |$)/ && uri != "" && plain && !disabled) {
          if (inline != "") { printf "%s", inline > keyfile; close(keyfile); key = keyfile }
          printf "%s\t%s\n", uri, key; found = 1; exit
        }
        types = ""; uri = ""; key = ""; inline = ""; plain = 0; disabled = 0; field = ""
      }
      /^#/ { next }
      /^[ \t]*$/ { if (!found) flush(); next }
      /^[ \t]/ { if (field == "signed-by") { l = $0; sub(/^[ \t]+/, "", l); if (l == ".") l = ""; inline = inline l "\n" } next }
      {
        field = tolower($1); sub(/:$/, "", field); v = $0; sub(/^[^:]*:[ \t]*/, "", v)
        if (field == "types") types = v
        else if (field == "enabled") disabled = (tolower(v) == "no")
        else if (field == "uris") { split(v, a, /[ \t]+/); uri = a[1] }
        else if (field == "suites") { n = split(v, a, /[ \t]+/); for (i = 1; i <= n; i++) if (a[i] !~ /-/ && a[i] !~ /\//) plain = 1 }
        else if (field == "signed-by") { if (v ~ /^\//) key = v; else if (v != "") inline = v "\n" }
      }
      END { if (!found) flush() }
    ' "$f" | head -1 | grep . && return 0
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '
      $1 != "deb" { next }
      {
        key = ""; i = 2
        if ($2 ~ /^\[/) {
          for (; i <= NF; i++) {
            o = $i; gsub(/[\[\]]/, "", o)
            if (o ~ /^signed-by=/) { key = o; sub(/^signed-by=/, "", key) }
            if ($i ~ /\]$/) { i++; break }
          }
        }
        uri = $i; suite = $(i + 1)
        if (uri != "" && suite !~ /-/ && suite !~ /\//) { printf "%s\t%s\n", uri, key; exit }
      }
    ' "$f" | head -1 | grep . && return 0
  done
  return 1
}

# Consul: not in Debian 12; Debian 11 ships consul 1.8.7. Fetch that .deb from the
# system's own Debian archive (see system_debian_source) with a private apt state, so
# that the system's sources are never touched, and unpack it under .tools/.
consul_bin="$tools/consul/usr/bin/consul"
if ! have consul && [ ! -x "$consul_bin" ]; then
  if have apt-get && have dpkg-deb; then
    work="$tools/apt-bullseye"
    mkdir -p "$work/lists/partial" "$work/archives/partial"
    if apt_src=$(system_debian_source "$work"); then
      uri=${apt_src%%$'\t'*}; key=${apt_src#*$'\t'}
      echo "ensure-test-deps: fetching consul from Debian bullseye ($uri, from this system's apt sources) into .tools/consul"
      if [ -n "$key" ]; then echo "deb [signed-by=$key] $uri bullseye main"; else echo "deb $uri bullseye main"; fi > "$work/sources.list"
      opts=(-o Dir::Etc::sourcelist="$work/sources.list" -o Dir::Etc::sourceparts=/nonexistent
            -o Dir::State::Lists="$work/lists" -o Dir::Cache::Archives="$work/archives"
            -o Debug::NoLocking=1)
      if apt-get "${opts[@]}" update -qq >/dev/null 2>&1 \
         && (cd "$work" && apt-get "${opts[@]}" download consul >/dev/null 2>&1); then
        deb=$(ls "$work"/consul_*.deb | head -1)
        mkdir -p "$tools/consul" && dpkg-deb -x "$deb" "$tools/consul"
      fi
      [ -x "$consul_bin" ] || missing+=("consul (could not download it from Debian bullseye at $uri)")
    else
      echo "ensure-test-deps: this system has no Debian apt source (no deb entry with a plain suite in /etc/apt/sources.list.d/*.sources, /etc/apt/sources.list or /etc/apt/sources.list.d/*.list): cannot fetch consul"
      missing+=("consul (no Debian apt source on this system to fetch it from; install consul 1.8+ on PATH or set SWITCHYARD_CONSUL_BIN)")
    fi
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
