#!/usr/bin/env bash
# install-deps.sh installs the distribution packages ambit's end-to-end cluster
# needs (Debian/Ubuntu, as root):
#   containerd, runc   the node's container runtime (the harness runs its own
#                      containerd with its own config, root, state and socket;
#                      the package's systemd service is not used and is stopped)
#   iproute2, iptables network namespaces, veths, routes, bridge NAT rules
#   tcpdump            wire captures in the scenarios
#   ca-certificates    go module downloads
#   clang, llvm, libbpf-dev, linux-libc-dev
#                      `make generate`: bpf2go compiles bpf/*.c and CI checks
#                      the committed objects match a fresh generation
# Already-installed packages make this a quick no-op.
set -euo pipefail

pkgs=(containerd runc iproute2 iptables tcpdump ca-certificates clang llvm libbpf-dev linux-libc-dev)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if ((${#missing[@]} > 0)); then
	echo "install-deps: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
	echo "install-deps: all present (${pkgs[*]})" >&2
fi

# The package may start a system containerd on /run/containerd; the harness
# does not need it and it must not compete for the machine's cgroups.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet containerd 2>/dev/null; then
	systemctl stop containerd || true
	systemctl disable containerd >/dev/null 2>&1 || true
fi
