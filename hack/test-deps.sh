#!/usr/bin/env bash
# Installs / builds everything Merlin's tests need, idempotently.
#
#   hack/test-deps.sh              Debian packages + kube-apiserver + envtest assets
#   hack/test-deps.sh --no-kube    Debian packages only
#   hack/test-deps.sh --quick-run  only the packages `make run` needs (no kube)
#
# The last line of stdout is the envtest assets directory, for
#   KUBEBUILDER_ASSETS=$(hack/test-deps.sh | tail -1)
# (with --no-kube / --quick-run nothing is printed on stdout). Everything else
# goes to stderr. See hack/README.md.
set -euo pipefail

KUBE_VERSION=v1.34.3

FULL_PACKAGES=(
  python3-sklearn python3-xgboost python3-cloudpickle python3-numpy
  python3-torch python3-yaml etcd-server prometheus git
  openssh-server openssh-client wrk systemd
)
QUICK_PACKAGES=(python3-sklearn python3-xgboost python3-cloudpickle python3-numpy python3-yaml git)

log() { printf 'test-deps: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
}

want_kube=1
packages=("${FULL_PACKAGES[@]}")
while (($#)); do
  case $1 in
    --no-kube) want_kube=0 ;;
    --quick-run) want_kube=0; packages=("${QUICK_PACKAGES[@]}") ;;
    -h | --help) usage; exit 0 ;;
    *) usage; die "unknown argument: $1" ;;
  esac
  shift
done

hack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/merlin

# ---------------------------------------------------------------- packages --

# as_root CMD...: run CMD as root (sudo only when we are not root already).
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    die "not root and no sudo: cannot run $*"
  fi
}

install_packages() {
  local -a missing=()
  local pkg status
  declare -A have=()
  # One dpkg-query for all packages (~10 ms). Unknown packages make it exit
  # non-zero; they simply stay out of $have.
  while read -r pkg status; do
    [[ $status == ii ]] && have[${pkg%%:*}]=1
  done < <(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "$@" 2>/dev/null || true)
  for pkg in "$@"; do
    [[ -n ${have[$pkg]:-} ]] || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0

  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -q >&2
  as_root apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" </dev/null >&2
}

install_packages "${packages[@]}"

# ------------------------------------------------------ webhook schemas --

# GitHub's official webhook schemas (npm @octokit/openapi-webhooks, MIT),
# which the webhook tests validate every payload they send against
# (internal/webhooktest). 37 MB unpacked, so fetched here, not vendored.
WEBHOOK_SCHEMAS_VERSION=12.1.0
fetch_webhook_schemas() {
  local dir=$cache_root/npm/openapi-webhooks-$WEBHOOK_SCHEMAS_VERSION tmp
  [[ -s $dir/package/generated/api.github.com.json ]] && return 0
  command -v npm >/dev/null 2>&1 || die "npm is not on PATH: it fetches @octokit/openapi-webhooks for the webhook tests"
  log "fetching @octokit/openapi-webhooks@$WEBHOOK_SCHEMAS_VERSION into $dir"
  mkdir -p "$cache_root/npm"
  tmp=$(mktemp -d "$cache_root/npm/.openapi-webhooks.XXXXXX")
  (cd "$tmp" && npm pack --silent "@octokit/openapi-webhooks@$WEBHOOK_SCHEMAS_VERSION" >&2 &&
    tar xzf octokit-openapi-webhooks-"$WEBHOOK_SCHEMAS_VERSION".tgz && rm -f ./*.tgz) ||
    { rm -rf "$tmp"; die "npm pack @octokit/openapi-webhooks@$WEBHOOK_SCHEMAS_VERSION failed"; }
  rm -rf "$dir"
  mv "$tmp" "$dir"
}
[[ ${packages[*]} == "${QUICK_PACKAGES[*]}" ]] || fetch_webhook_schemas

((want_kube)) || exit 0

# ---------------------------------------------------------- kube-apiserver --

bin_dir=$cache_root/kube-apiserver/$KUBE_VERSION
apiserver=$bin_dir/kube-apiserver
assets=$cache_root/kubebuilder-assets/$KUBE_VERSION

build_apiserver() {
  command -v go >/dev/null 2>&1 || die "go is not on PATH"
  mkdir -p "$bin_dir"
  # Serialise concurrent runs (e.g. parallel make jobs) on the build.
  exec 9>"$bin_dir/.lock"
  flock 9
  if [[ -x $apiserver ]]; then
    exec 9>&-
    return 0
  fi

  local tmp ver major minor date ldflags=() key val got
  # Leftovers of a killed build (we hold the lock, so nobody else owns them).
  rm -f "$bin_dir"/.kube-apiserver.*
  tmp=$(mktemp "$bin_dir/.kube-apiserver.XXXXXX")
  # shellcheck disable=SC2064 # expand $tmp now
  trap "rm -f '$tmp'" EXIT

  ver=${KUBE_VERSION#v}
  major=${ver%%.*}
  minor=${ver#*.}
  minor=${minor%%.*}
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  # Same version stamping as kubernetes' hack/lib/version.sh.
  for key in gitVersion=$KUBE_VERSION gitMajor=$major gitMinor=$minor \
    gitTreeState=clean buildDate=$date; do
    val=${key#*=}
    key=${key%%=*}
    ldflags+=("-X=k8s.io/client-go/pkg/version.$key=$val"
      "-X=k8s.io/component-base/version.$key=$val")
  done

  log "building kube-apiserver $KUBE_VERSION into $apiserver (first time only; ~10 CPU-minutes)"
  local start=$SECONDS build_pid
  # Static binary like upstream's release build; ignore any GOFLAGS / go.work
  # of the caller that could change the build list. Run it in the background
  # so that INT/TERM reach it too and no orphaned `go build` keeps going.
  (
    cd "$hack_dir/tools/kube-apiserver"
    exec env CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=readonly \
      GOTOOLCHAIN="${GOTOOLCHAIN:-local}" \
      go build -trimpath -buildvcs=false -ldflags="-s -w ${ldflags[*]}" \
      -o "$tmp" k8s.io/kubernetes/cmd/kube-apiserver
  ) >&2 &
  build_pid=$!
  # shellcheck disable=SC2064 # expand $build_pid now
  trap "kill $build_pid 2>/dev/null; wait $build_pid; exit 130" INT TERM
  wait "$build_pid" || die "go build of kube-apiserver failed"
  trap - INT TERM
  chmod 0755 "$tmp"
  got=$("$tmp" --version)
  [[ $got == "Kubernetes $KUBE_VERSION" ]] \
    || die "built kube-apiserver reports '$got', want 'Kubernetes $KUBE_VERSION'"
  mv -f "$tmp" "$apiserver"
  trap - EXIT
  exec 9>&-
  log "built kube-apiserver in $((SECONDS - start))s"
}

# link NAME TARGET: make $assets/NAME a symlink to TARGET (no-op if it is).
link() {
  [[ $(readlink "$assets/$1" 2>/dev/null) == "$2" ]] && return 0
  ln -sfn "$2" "$assets/$1"
}

[[ -x $apiserver ]] || build_apiserver

# Debian's etcd-server (3.4) installs /usr/bin/etcd; MERLIN_ETCD overrides.
etcd=${MERLIN_ETCD:-/usr/bin/etcd}
[[ -x $etcd ]] || die "etcd not found at $etcd (install etcd-server or set MERLIN_ETCD)"

mkdir -p "$assets"
link kube-apiserver "$apiserver"
link etcd "$etcd"

printf '%s\n' "$assets"
