/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Shared definitions of ambit's capture programs (capture.c, pod.c). */
#ifndef AMBIT_COMMON_H
#define AMBIT_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1

/* Well-known in-pod ports. The listeners themselves are bound to ephemeral
 * ports; sk_lookup steers these port numbers to them through the sockmap. */
#define PORT_OUTBOUND 15001
#define PORT_INBOUND 15006
#define PORT_HBONE 15008

/* Sockmap slots of the per-pod "listeners" map. */
#define SLOT_OUTBOUND 0
#define SLOT_INBOUND 1
#define SLOT_HBONE 2

#define MAX_EXCLUDE 8

/* Reads a ctx field into a register now. clang otherwise sinks such loads
 * into branches as "ctx + off" pointer arithmetic, which the verifier
 * rejects ("dereference of modified ctx ptr"). */
#define CTX_READ(x)                                                            \
	({                                                                     \
		__u32 _v = (x);                                                \
		asm volatile("" : "+r"(_v));                                   \
		_v;                                                            \
	})

/* An address as 16 bytes: IPv6 as is, IPv4 as ::ffff:a.b.c.d. */
struct addr16 {
	__u32 w[4];
};

/* The original destination of a captured connect(): port in network order. */
struct orig_dst {
	struct addr16 addr;
	__u64 netns;
	__u16 port;
	__u16 family; /* family the app connected with: AF_INET or AF_INET6 */
	__u32 _pad;
};

/* Key of origdst: the client end of the redirected connection as ambit's
 * accepted socket sees it (its remote address), scoped by netns. */
struct tuple_key {
	__u64 netns;
	struct addr16 addr;
	__u16 port; /* host order */
	__u16 _pad1;
	__u32 _pad2;
};

static __always_inline void v4mapped(struct addr16 *a, __u32 ip4_be)
{
	a->w[0] = 0;
	a->w[1] = 0;
	a->w[2] = bpf_htonl(0x0000ffff);
	a->w[3] = ip4_be;
}

static __always_inline int is_v4mapped(const __u32 *w)
{
	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int addr_eq(const struct addr16 *a, const struct addr16 *b)
{
	return a->w[0] == b->w[0] && a->w[1] == b->w[1] && a->w[2] == b->w[2] &&
	       a->w[3] == b->w[3];
}

#endif
