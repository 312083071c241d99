// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore
/*
 * capture.c: ambit's node-wide outbound capture. Loaded once per node and
 * attached at the cgroup v2 root, so it sees connect() of every process in
 * every network namespace; bpf_get_netns_cookie tells enrolled pods apart.
 * Replies of other flows are never touched: only connect() is rewritten.
 */
#include "common.h"

char __license[] SEC("license") = "Dual BSD/GPL";

/* Mark ambit's own sockets carry (SO_MARK); set by the loader. */
volatile const __u32 ambit_mark = 0;
volatile const __u32 ambit_mark_mask = 0;

/* Per enrolled pod netns (key: netns cookie): outbound ports it excludes. */
struct pod_cfg {
	__u16 out_exclude[MAX_EXCLUDE]; /* host order, 0 = unused */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct pod_cfg);
} pods SEC(".maps");

/* Per enrolled pod netns (key: netns cookie): the pod's own addresses,
 * which getsockname() of a captured socket answers instead of loopback. */
struct pod_addr {
	__u32 ip4;    /* network order; 0 = none */
	__u32 ip6[4]; /* network order; all 0 = none */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct pod_addr);
} pod_addrs SEC(".maps");

/* The original destination, stored on the app's socket itself: it lives
 * exactly as long as the socket, so nothing leaks. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct orig_dst);
} sk_orig SEC(".maps");

/* Original destination keyed by the client end (netns, local addr, port),
 * written when the kernel has chosen the source port (sockops), read and
 * deleted by ambit when it accepts the redirected connection. LRU: an
 * evicted entry makes ambit close that connection (fail closed). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tuple_key);
	__type(value, struct orig_dst);
} origdst SEC(".maps");

static __always_inline int own_socket(struct bpf_sock *sk)
{
	return ambit_mark_mask && (sk->mark & ambit_mark_mask) == ambit_mark;
}

static __always_inline int excluded(const struct pod_cfg *cfg, __u16 port)
{
#pragma unroll
	for (int i = 0; i < MAX_EXCLUDE; i++)
		if (cfg->out_exclude[i] && cfg->out_exclude[i] == port)
			return 1;
	return 0;
}

/*
 * Decides, for a TCP connect() in an enrolled netns, whether it is captured:
 * not ambit's marked sockets, not loopback or unspecified destinations, not
 * excluded ports. Captured connects are sent to 127.0.0.1:15001 (or
 * [::1]:15001) inside the same netns and the original destination is kept
 * on the socket. Returns 0 (EPERM to the app) when it cannot keep the
 * original destination: better a failed connect than an uncaptured one.
 */
static __always_inline int capture(struct bpf_sock_addr *ctx, struct addr16 *dst,
				   __u16 family)
{
	struct bpf_sock *sk = ctx->sk;
	struct orig_dst *o;
	__u64 ns;
	struct pod_cfg *cfg;

	if (ctx->type != SOCK_STREAM || !sk)
		return 1;
	ns = bpf_get_netns_cookie(ctx);
	cfg = bpf_map_lookup_elem(&pods, &ns);
	if (!cfg)
		return 1;
	/* MPTCP: sockops sees its subflows, not this socket, so the original
	 * destination could not be published. Refuse rather than let it out
	 * uncaptured (the pod's egress program would drop it anyway). */
	if (ctx->protocol == 262 /* IPPROTO_MPTCP */)
		return own_socket(sk) ? 1 : 0;
	if (ctx->protocol != IPPROTO_TCP)
		return 1;
	if (own_socket(sk) || excluded(cfg, bpf_ntohs(ctx->user_port))) {
		bpf_sk_storage_delete(&sk_orig, sk);
		return 1;
	}
	o = bpf_sk_storage_get(&sk_orig, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o)
		return 0;
	o->addr = *dst;
	o->netns = ns;
	o->port = (__u16)ctx->user_port;
	o->family = family;
	return 2; /* captured: caller rewrites */
}

SEC("cgroup/connect4")
int ambit_connect4(struct bpf_sock_addr *ctx)
{
	struct addr16 dst;
	__u32 ip = ctx->user_ip4;
	int r;

	/* Loopback and 0.0.0.0 stay inside the pod: never captured. */
	if ((bpf_ntohl(ip) >> 24) == 127 || ip == 0)
		return 1;
	v4mapped(&dst, ip);
	r = capture(ctx, &dst, AF_INET);
	if (r != 2)
		return r;
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons(PORT_OUTBOUND);
	return 1;
}

SEC("cgroup/connect6")
int ambit_connect6(struct bpf_sock_addr *ctx)
{
	struct addr16 dst;
	int mapped, r;

	dst.w[0] = ctx->user_ip6[0];
	dst.w[1] = ctx->user_ip6[1];
	dst.w[2] = ctx->user_ip6[2];
	dst.w[3] = ctx->user_ip6[3];
	mapped = is_v4mapped(dst.w);
	/* ::1, :: and v4-mapped loopback/unspecified stay inside the pod. */
	if (!dst.w[0] && !dst.w[1] && !dst.w[2] &&
	    (dst.w[3] == bpf_htonl(1) || dst.w[3] == 0))
		return 1;
	if (mapped && ((bpf_ntohl(dst.w[3]) >> 24) == 127 || dst.w[3] == 0))
		return 1;
	r = capture(ctx, &dst, mapped ? AF_INET : AF_INET6);
	if (r != 2)
		return r;
	if (mapped) {
		ctx->user_ip6[3] = bpf_htonl(0x7f000001);
	} else {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(1);
	}
	ctx->user_port = bpf_htons(PORT_OUTBOUND);
	return 1;
}

/* getpeername() of a captured socket answers the original destination, so
 * the app never sees the rewrite. */
SEC("cgroup/getpeername4")
int ambit_getpeername4(struct bpf_sock_addr *ctx)
{
	struct orig_dst *o;

	if (!ctx->sk)
		return 1;
	o = bpf_sk_storage_get(&sk_orig, ctx->sk, 0, 0);
	if (!o)
		return 1;
	ctx->user_ip4 = o->addr.w[3];
	ctx->user_port = o->port;
	return 1;
}

SEC("cgroup/getpeername6")
int ambit_getpeername6(struct bpf_sock_addr *ctx)
{
	struct orig_dst *o;

	if (!ctx->sk)
		return 1;
	o = bpf_sk_storage_get(&sk_orig, ctx->sk, 0, 0);
	if (!o)
		return 1;
	ctx->user_ip6[0] = o->addr.w[0];
	ctx->user_ip6[1] = o->addr.w[1];
	ctx->user_ip6[2] = o->addr.w[2];
	ctx->user_ip6[3] = o->addr.w[3];
	ctx->user_port = o->port;
	return 1;
}

/* getsockname() of a captured socket answers the pod's own address where
 * the rewrite left loopback (the port stays: it is the socket's own), so
 * the app does not see 127.0.0.1 as its local address. */
SEC("cgroup/getsockname4")
int ambit_getsockname4(struct bpf_sock_addr *ctx)
{
	struct pod_addr *a;
	__u64 ns;

	if (!ctx->sk || (bpf_ntohl(ctx->user_ip4) >> 24) != 127)
		return 1;
	if (!bpf_sk_storage_get(&sk_orig, ctx->sk, 0, 0))
		return 1;
	ns = bpf_get_netns_cookie(ctx);
	a = bpf_map_lookup_elem(&pod_addrs, &ns);
	if (a && a->ip4)
		ctx->user_ip4 = a->ip4;
	return 1;
}

SEC("cgroup/getsockname6")
int ambit_getsockname6(struct bpf_sock_addr *ctx)
{
	struct pod_addr *a;
	__u32 w0, w1, w2, w3;
	__u64 ns;

	if (!ctx->sk)
		return 1;
	w0 = ctx->user_ip6[0];
	w1 = ctx->user_ip6[1];
	w2 = ctx->user_ip6[2];
	w3 = ctx->user_ip6[3];
	if (!bpf_sk_storage_get(&sk_orig, ctx->sk, 0, 0))
		return 1;
	ns = bpf_get_netns_cookie(ctx);
	a = bpf_map_lookup_elem(&pod_addrs, &ns);
	if (!a)
		return 1;
	if (!w0 && !w1 && w2 == bpf_htonl(0x0000ffff) && (bpf_ntohl(w3) >> 24) == 127) {
		if (a->ip4) /* v4-mapped loopback: the pod's IPv4, mapped */
			ctx->user_ip6[3] = a->ip4;
		return 1;
	}
	if (!w0 && !w1 && !w2 && w3 == bpf_htonl(1) && (a->ip6[0] | a->ip6[1] | a->ip6[2] | a->ip6[3])) {
		ctx->user_ip6[0] = a->ip6[0];
		ctx->user_ip6[1] = a->ip6[1];
		ctx->user_ip6[2] = a->ip6[2];
		ctx->user_ip6[3] = a->ip6[3];
	}
	return 1;
}

/* When the kernel has picked the source port of a captured connect, publish
 * the original destination under the client end, which is what ambit's
 * accepted socket sees as its remote address. */
SEC("sockops")
int ambit_sockops(struct bpf_sock_ops *skops)
{
	struct tuple_key k = {};
	struct bpf_sock *sk;
	struct orig_dst *o;
	__u32 ip4, a6[4];

	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB)
		return 1;
	sk = skops->sk;
	if (!sk)
		return 1;
	o = bpf_sk_storage_get(&sk_orig, sk, 0, 0);
	if (!o)
		return 1;
	k.netns = o->netns;
	/* Read every ctx field unconditionally: the verifier rejects the
	 * pointer arithmetic clang emits for branch-selected ctx fields. */
	ip4 = CTX_READ(skops->local_ip4);
	a6[0] = CTX_READ(skops->local_ip6[0]);
	a6[1] = CTX_READ(skops->local_ip6[1]);
	a6[2] = CTX_READ(skops->local_ip6[2]);
	a6[3] = CTX_READ(skops->local_ip6[3]);
	if (CTX_READ(skops->family) == AF_INET) {
		v4mapped(&k.addr, ip4);
	} else {
		k.addr.w[0] = a6[0];
		k.addr.w[1] = a6[1];
		k.addr.w[2] = a6[2];
		k.addr.w[3] = a6[3];
	}
	k.port = (__u16)skops->local_port;
	bpf_map_update_elem(&origdst, &k, o, BPF_ANY);
	return 1;
}
