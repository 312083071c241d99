// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore
/*
 * pod.c: ambit's per-pod programs, loaded once per enrolled pod with that
 * pod's constants: an sk_lookup program for the pod netns (inbound steering
 * and the outbound listener), tc programs on the pod interface (default deny
 * of uncaptured egress, anti-spoofing) and one on the host-side peer (keeps
 * remote hosts from riding the kubelet probe exemption).
 */
#include "common.h"
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>

char __license[] SEC("license") = "Dual BSD/GPL";

#define MAX_OWN 8
#define MAX_PROBE 4

/* Per-pod constants, set by the loader before the programs are loaded. */
struct pod_conf {
	struct addr16 own[MAX_OWN];	/* the pod's addresses */
	struct addr16 probe[MAX_PROBE]; /* kubelet source addresses */
	__u16 in_exclude[MAX_EXCLUDE];	/* host order, 0 = unused */
	__u16 out_exclude[MAX_EXCLUDE];
	__u32 n_own;
	__u32 n_probe;
	__u32 mark;
	__u32 mark_mask;
	__u32 slot_base; /* this pod's first slot in the node-wide listeners map */
};

volatile const struct pod_conf conf = {};

/* ambit's listeners, node-wide: pod slot_base + SLOT_*. One map for all
 * pods because creating a sockmap costs 18-30 ms on the target kernel
 * (measured), which alone would exceed the enrolment budget. Closing a
 * listener removes it; a new daemon swaps its own in atomically. The loader
 * sets max_entries. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} listeners SEC(".maps");

/* Counters of decisions that drop, read by tests and metrics. */
#define STAT_EGRESS_SYN_DROP 0
#define STAT_SPOOF_DROP 1
#define STAT_FORGED_PROBE_DROP 2
#define STAT_NO_LISTENER_DROP 3
#define STAT_MAX 4
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 i)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &i);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline int in_list(const volatile struct addr16 *list, __u32 n, int max,
				   const struct addr16 *a)
{
	for (int i = 0; i < max; i++) {
		if ((__u32)i >= n)
			break;
		if (list[i].w[0] == a->w[0] && list[i].w[1] == a->w[1] &&
		    list[i].w[2] == a->w[2] && list[i].w[3] == a->w[3])
			return 1;
	}
	return 0;
}

static __always_inline int port_in(const volatile __u16 *list, __u16 port)
{
	for (int i = 0; i < MAX_EXCLUDE; i++)
		if (list[i] && list[i] == port)
			return 1;
	return 0;
}

static __always_inline int assign_slot(struct bpf_sk_lookup *ctx, __u32 slot, int deny)
{
	struct bpf_sock *sk;
	long err;

	slot += conf.slot_base;
	sk = bpf_map_lookup_elem(&listeners, &slot);

	if (!sk) {
		if (!deny)
			return SK_PASS;
		count(STAT_NO_LISTENER_DROP);
		return SK_DROP;
	}
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		count(STAT_NO_LISTENER_DROP);
		return SK_DROP;
	}
	return SK_PASS;
}

/*
 * sk_lookup, per pod netns. Decides which socket receives a new TCP
 * connection in the pod:
 *  - to loopback port 15001 (where connect4/6 sent the app's outbound
 *    connects): ambit's outbound listener; none there means nothing is
 *    bound, so the connect is refused (fail closed, fast);
 *  - to a pod address from a pod address: a connection from inside this
 *    netns that capture let through (ambit's marked dials, excluded
 *    ports): regular lookup, the app gets it;
 *  - from a kubelet probe source: regular lookup (the host program drops
 *    forgeries of those sources);
 *  - to an excluded inbound port: regular lookup;
 *  - anything else: 15008 for HBONE, 15006 otherwise; no listener there
 *    means DROP, never the app in plaintext.
 */
SEC("sk_lookup")
int ambit_lookup(struct bpf_sk_lookup *ctx)
{
	struct addr16 src, dst;
	__u32 r4, l4, lport;

	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	/* Read every ctx field unconditionally: the verifier rejects the
	 * pointer arithmetic clang emits for branch-selected ctx fields. */
	r4 = CTX_READ(ctx->remote_ip4);
	l4 = CTX_READ(ctx->local_ip4);
	src.w[0] = CTX_READ(ctx->remote_ip6[0]);
	src.w[1] = CTX_READ(ctx->remote_ip6[1]);
	src.w[2] = CTX_READ(ctx->remote_ip6[2]);
	src.w[3] = CTX_READ(ctx->remote_ip6[3]);
	dst.w[0] = CTX_READ(ctx->local_ip6[0]);
	dst.w[1] = CTX_READ(ctx->local_ip6[1]);
	dst.w[2] = CTX_READ(ctx->local_ip6[2]);
	dst.w[3] = CTX_READ(ctx->local_ip6[3]);
	lport = CTX_READ(ctx->local_port);
	if (ctx->family == AF_INET) {
		v4mapped(&src, r4);
		v4mapped(&dst, l4);
		if ((bpf_ntohl(l4) >> 24) == 127)
			goto loopback;
	} else if (!dst.w[0] && !dst.w[1] && !dst.w[2] && dst.w[3] == bpf_htonl(1)) {
		goto loopback;
	}
	if (in_list(conf.own, conf.n_own, MAX_OWN, &src))
		return SK_PASS;
	if (in_list(conf.probe, conf.n_probe, MAX_PROBE, &src))
		return SK_PASS;
	if (port_in(conf.in_exclude, lport))
		return SK_PASS;
	return assign_slot(ctx, lport == PORT_HBONE ? SLOT_HBONE : SLOT_INBOUND, 1);

loopback:
	if (lport == PORT_OUTBOUND)
		return assign_slot(ctx, SLOT_OUTBOUND, 0);
	return SK_PASS;
}

struct pkt {
	struct addr16 src;
	struct tcphdr tcp;
};

/* Copies the source address and TCP header of an Ethernet + IPv4/IPv6 +
 * TCP packet; returns 0 when the packet is TCP. bpf_skb_load_bytes keeps
 * the bounds checks in the kernel's hands. */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	__u32 off = sizeof(struct ethhdr);

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) || ip.protocol != IPPROTO_TCP)
			return -1;
		v4mapped(&p->src, ip.saddr);
		off += ip.ihl * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) || ip6.nexthdr != IPPROTO_TCP)
			return -1;
		__builtin_memcpy(&p->src, &ip6.saddr, sizeof(p->src));
		off += sizeof(ip6);
	} else {
		return -1;
	}
	if (bpf_skb_load_bytes(skb, off, &p->tcp, sizeof(p->tcp)))
		return -1;
	return 0;
}

/*
 * tc egress on the pod interface, inside the pod netns: default deny of
 * uncaptured TCP. A new connection (SYN without ACK) may leave only from
 * ambit's marked sockets or to an excluded port. Everything captured went to
 * loopback and never gets here; so if the node-wide capture state for this
 * pod is lost, the app's connects die here instead of leaving in
 * plaintext. Replies of inbound flows (SYN-ACK, ACKs) are not new
 * connections and pass.
 */
SEC("tc")
int ambit_pod_egress(struct __sk_buff *skb)
{
	struct pkt p;

	if (parse(skb, &p))
		return TC_ACT_UNSPEC;
	if (!p.tcp.syn || p.tcp.ack)
		return TC_ACT_UNSPEC;
	if (conf.mark_mask && (skb->mark & conf.mark_mask) == conf.mark)
		return TC_ACT_UNSPEC;
	if (port_in(conf.out_exclude, bpf_ntohs(p.tcp.dest)))
		return TC_ACT_UNSPEC;
	count(STAT_EGRESS_SYN_DROP);
	return TC_ACT_SHOT;
}

/*
 * tc ingress on the pod interface, used only when the host-side peer is
 * unknown (ambit_host_egress does the same check otherwise, saving one tcx
 * attach): a packet from outside claiming one of the pod's own addresses as
 * source is a forgery (sk_lookup trusts that source as "from inside the
 * pod"); IPv4 drops these as martians already, IPv6 does not.
 */
SEC("tc")
int ambit_pod_ingress(struct __sk_buff *skb)
{
	struct pkt p;

	if (parse(skb, &p))
		return TC_ACT_UNSPEC;
	if (in_list(conf.own, conf.n_own, MAX_OWN, &p.src)) {
		count(STAT_SPOOF_DROP);
		return TC_ACT_SHOT;
	}
	return TC_ACT_UNSPEC;
}

/*
 * tc egress on the host-side peer of the pod interface (host netns): every
 * packet into the pod passes here. A packet claiming one of the pod's own
 * addresses is a forgery (see ambit_pod_ingress). The kubelet's probes come from the host stack with a probe source address and
 * are exempt from capture. A packet with such a source that was received on
 * some interface (skb->ingress_ifindex != 0: forwarded from a remote host or
 * bridged from another pod) rather than generated by this host is a forgery
 * and is dropped.
 */
SEC("tc")
int ambit_host_egress(struct __sk_buff *skb)
{
	struct pkt p;

	if (parse(skb, &p))
		return TC_ACT_UNSPEC;
	if (in_list(conf.own, conf.n_own, MAX_OWN, &p.src)) {
		count(STAT_SPOOF_DROP);
		return TC_ACT_SHOT;
	}
	if (skb->ingress_ifindex && in_list(conf.probe, conf.n_probe, MAX_PROBE, &p.src)) {
		count(STAT_FORGED_PROBE_DROP);
		return TC_ACT_SHOT;
	}
	return TC_ACT_UNSPEC;
}
