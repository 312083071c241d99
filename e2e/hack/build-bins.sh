#!/usr/bin/env bash
# build-bins.sh builds the pinned binaries of ambit's end-to-end cluster into
# $BIN (default: <repo>/bin, git-ignored):
#   kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl (k8s v1.34.3)
#   etcd                                                           (v3.5.35, e2e/tools/etcd)
#   cni/bridge cni/host-local cni/loopback                         (containernetworking/plugins)
#   helm                                                           (helm.sh/helm/v3)
#   coredns                                                        (cluster DNS, github.com/coredns/coredns)
# Each group is skipped when $BIN/.stamps/<group> already holds the expected
# stamp (version plus a hash of the tools module files), so a second run is a
# no-op. Builds run under `nice -n 10`; a cold build takes ~10+ minutes on 2 cores.
#
# Usage: e2e/hack/build-bins.sh [group...]   groups: kube etcd cni helm coredns (default: all)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${BIN:-$ROOT/bin}"
STAMPS="$BIN/.stamps"
GO="${GO:-go}"
NICE=(nice -n "${NICE_LEVEL:-10}")

KUBE_VERSION=v1.34.3
ETCD_VERSION=v3.5.35
CNI_VERSION=v1.9.1
HELM_VERSION=v3.22.0
COREDNS_VERSION=v1.14.7

mkdir -p "$BIN/cni" "$STAMPS"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false"

log() { printf '[build-bins %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# stamp <group> <version> <files...>: prints the expected stamp for a group.
stamp() {
	local v="$1"
	shift
	local h=""
	if (($# > 0)); then h="$(cat "$@" | sha256sum | cut -c1-16)"; fi
	printf '%s %s %s\n' "$v" "$h" "$("$GO" env GOVERSION)"
}

# fresh <group> <stamp> <binaries...>: true when the group is built and stamped.
fresh() {
	local g="$1" s="$2"
	shift 2
	[[ -f "$STAMPS/$g" && "$(cat "$STAMPS/$g")" == "$s" ]] || return 1
	local b
	for b in "$@"; do [[ -x "$BIN/$b" ]] || return 1; done
}

build_kube() {
	local dir="$ROOT/e2e/tools/kube"
	local s
	s="$(stamp "$KUBE_VERSION" "$dir/go.mod" "$dir/go.sum")"
	local bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
	if fresh kube "$s" "${bins[@]}"; then log "kube $KUBE_VERSION: up to date"; return; fi
	log "kube $KUBE_VERSION: building ${bins[*]} (cold: ~10 minutes on 2 cores)"
	local v=k8s.io/component-base/version minor="${KUBE_VERSION#v1.}"
	minor="${minor%%.*}"
	local ld="-s -w -X $v.gitVersion=$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
	local pkgs=()
	for b in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
	local t0=$SECONDS
	(cd "$dir" && "${NICE[@]}" "$GO" build -trimpath -ldflags "$ld" -o "$BIN/" "${pkgs[@]}")
	echo "$s" >"$STAMPS/kube"
	log "kube: built in $((SECONDS - t0))s"
}

build_etcd() {
	local dir="$ROOT/e2e/tools/etcd"
	local s
	s="$(stamp "$ETCD_VERSION" "$dir/go.mod" "$dir/go.sum" "$dir/main.go")"
	if fresh etcd "$s" etcd; then log "etcd $ETCD_VERSION: up to date"; return; fi
	log "etcd $ETCD_VERSION: building"
	local t0=$SECONDS
	(cd "$dir" && "${NICE[@]}" "$GO" build -trimpath -ldflags "-s -w" -o "$BIN/etcd" .)
	echo "$s" >"$STAMPS/etcd"
	log "etcd: built in $((SECONDS - t0))s"
}

build_cni() {
	local s
	s="$(stamp "$CNI_VERSION")"
	if fresh cni "$s" cni/bridge cni/host-local cni/loopback; then log "cni $CNI_VERSION: up to date"; return; fi
	log "cni plugins $CNI_VERSION: building"
	local t0=$SECONDS m=github.com/containernetworking/plugins/plugins
	GOBIN="$BIN/cni" "${NICE[@]}" "$GO" install -trimpath -ldflags "-s -w" \
		"$m/main/bridge@$CNI_VERSION" "$m/ipam/host-local@$CNI_VERSION" "$m/main/loopback@$CNI_VERSION"
	echo "$s" >"$STAMPS/cni"
	log "cni: built in $((SECONDS - t0))s"
}

build_helm() {
	local s
	s="$(stamp "$HELM_VERSION")"
	if fresh helm "$s" helm; then log "helm $HELM_VERSION: up to date"; return; fi
	log "helm $HELM_VERSION: building"
	local t0=$SECONDS
	GOBIN="$BIN" "${NICE[@]}" "$GO" install -trimpath \
		-ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
		"helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
	echo "$s" >"$STAMPS/helm"
	log "helm: built in $((SECONDS - t0))s"
}

build_coredns() {
	local s
	s="$(stamp "$COREDNS_VERSION")"
	if fresh coredns "$s" coredns; then log "coredns $COREDNS_VERSION: up to date"; return; fi
	log "coredns $COREDNS_VERSION: building"
	local t0=$SECONDS
	GOBIN="$BIN" "${NICE[@]}" "$GO" install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
	echo "$s" >"$STAMPS/coredns"
	log "coredns: built in $((SECONDS - t0))s"
}

groups=("$@")
if ((${#groups[@]} == 0)); then groups=(etcd cni kube helm coredns); fi
t0=$SECONDS
for g in "${groups[@]}"; do
	case "$g" in
	kube | etcd | cni | helm | coredns) "build_$g" ;;
	*)
		echo "unknown group: $g (want kube, etcd, cni, helm or coredns)" >&2
		exit 2
		;;
	esac
done
log "done in $((SECONDS - t0))s: $BIN"
