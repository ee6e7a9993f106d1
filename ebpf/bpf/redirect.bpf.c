/* In-pod redirection with tc programs (direct action), the eBPF form of the
 * nftables rules in cni-plugin/src/agent/redirect/nftables.rs. Both
 * programs are attached to every interface of an enrolled pod, inside the
 * pod's network namespace, where ztunnel's listeners are:
 *
 *  - mesh_egress: TCP the application sends (not ztunnel's own sockets, not
 *    replies to kubelet probes) is turned back into the pod's stack with the
 *    redirect mark, which policy routing delivers locally;
 *  - mesh_ingress: a new connection (a SYN) is given to ztunnel's listener
 *    with bpf_sk_assign, as TPROXY would: 15001 for what the application
 *    sent, 15006 for plaintext arriving from outside, 15008 left alone. The
 *    accepted socket's local address is the original destination.
 *
 * When ztunnel does not listen, the SYN is dropped and counted: a captured
 * pod's connection fails, it never leaves in plaintext. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "mesh.h"

/* Written by the agent before loading (EbpfLoader::set_global). The values
 * here only make an object loaded without settings harmless. */
volatile const struct mesh_config CONFIG = {
	.inpod_mark = 0x539,
	.redirect_mark = 0x111,
	.mark_mask = 0xfff,
	.outbound_port = 15001,
	.inbound_plaintext_port = 15006,
	.hbone_port = 15008,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MESH_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} mesh_stats SEC(".maps");

static __always_inline void count(__u32 counter)
{
	__u64 *value = bpf_map_lookup_elem(&mesh_stats, &counter);
	if (value)
		*value += 1;
}

enum parsed { NOT_TCP, TCP, MALFORMED };

struct packet {
	struct bpf_sock_tuple tuple; /* as the packet travels: src, dst */
	__u8 v6;
	__u8 has_tcp_header; /* false for a later fragment */
	__u8 syn;            /* SYN without ACK: a new connection */
	__u32 tcp_off;       /* where the TCP header starts */
};

#define IPV6_EXT_MAX 4

static __always_inline enum parsed parse_tcp(struct __sk_buff *skb, __u32 off,
					      struct packet *p)
{
	struct tcphdr tcp;
	if (bpf_skb_load_bytes(skb, off, &tcp, sizeof(tcp)) < 0)
		return MALFORMED;
	p->has_tcp_header = 1;
	p->tcp_off = off;
	p->syn = tcp.syn && !tcp.ack;
	if (p->v6) {
		p->tuple.ipv6.sport = tcp.source;
		p->tuple.ipv6.dport = tcp.dest;
	} else {
		p->tuple.ipv4.sport = tcp.source;
		p->tuple.ipv4.dport = tcp.dest;
	}
	return TCP;
}

static __always_inline enum parsed parse(struct __sk_buff *skb, struct packet *p)
{
	__u32 off = ETH_HLEN;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)) < 0)
			return MALFORMED;
		if (ip.protocol != IPPROTO_TCP)
			return NOT_TCP;
		if (ip.ihl < 5)
			return MALFORMED;
		p->tuple.ipv4.saddr = ip.saddr;
		p->tuple.ipv4.daddr = ip.daddr;
		/* A later fragment carries no TCP header. */
		if (ip.frag_off & bpf_htons(0x1fff))
			return TCP;
		return parse_tcp(skb, off + ip.ihl * 4, p);
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_skb_load_bytes(skb, off, &ip6, sizeof(ip6)) < 0)
			return MALFORMED;
		p->v6 = 1;
		__builtin_memcpy(p->tuple.ipv6.saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->tuple.ipv6.daddr, &ip6.daddr, 16);
		off += sizeof(ip6);
		__u8 next = ip6.nexthdr;
		/* Extension headers: hop-by-hop, routing, destination options,
		 * fragment. TCP hidden deeper than we look is dropped, not
		 * passed: it would otherwise escape capture. */
#pragma unroll
		for (int i = 0; i < IPV6_EXT_MAX; i++) {
			if (next == IPPROTO_TCP)
				return parse_tcp(skb, off, p);
			if (next == IPPROTO_FRAGMENT) {
				struct frag_hdr { __u8 nexthdr, reserved; __be16 frag_off; __be32 id; } frag;
				if (bpf_skb_load_bytes(skb, off, &frag, sizeof(frag)) < 0)
					return MALFORMED;
				if (frag.nexthdr == IPPROTO_TCP && (frag.frag_off & bpf_htons(0xfff8)))
					return TCP;
				next = frag.nexthdr;
				off += sizeof(frag);
				continue;
			}
			if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING &&
			    next != IPPROTO_DSTOPTS)
				return NOT_TCP;
			__u8 ext[2];
			if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)) < 0)
				return MALFORMED;
			next = ext[0];
			off += (ext[1] + 1) * 8;
		}
		return next == IPPROTO_TCP ? parse_tcp(skb, off, p) : MALFORMED;
	}
	return NOT_TCP;
}

static __always_inline int marked(struct __sk_buff *skb, __u32 mark)
{
	return (skb->mark & CONFIG.mark_mask) == mark;
}

static __always_inline int probe(const struct packet *p, int source)
{
	if (p->v6) {
		const __u32 *a = source ? p->tuple.ipv6.saddr : p->tuple.ipv6.daddr;
		const __u32 *b = (const __u32 *)CONFIG.probe_v6;
		return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3];
	}
	return (source ? p->tuple.ipv4.saddr : p->tuple.ipv4.daddr) == CONFIG.probe_v4;
}

/* The socket a packet with this tuple would reach in the pod. */
static __always_inline struct bpf_sock *lookup(struct __sk_buff *skb, struct packet *p)
{
	if (p->v6)
		return bpf_skc_lookup_tcp(skb, &p->tuple, sizeof(p->tuple.ipv6),
					  BPF_F_CURRENT_NETNS, 0);
	return bpf_skc_lookup_tcp(skb, &p->tuple, sizeof(p->tuple.ipv4),
				  BPF_F_CURRENT_NETNS, 0);
}

static __always_inline void set_dport(struct packet *p, __u16 port)
{
	if (p->v6)
		p->tuple.ipv6.dport = bpf_htons(port);
	else
		p->tuple.ipv4.dport = bpf_htons(port);
}

#define CONTINUE -1

/* Both programs' first step: TCP goes on (CONTINUE), anything else passes,
 * TCP whose headers cannot be read is dropped and counted. */
static __always_inline int parse_verdict(struct __sk_buff *skb, struct packet *p)
{
	switch (parse(skb, p)) {
	case NOT_TCP:
		return TC_ACT_OK;
	case MALFORMED:
		count(MESH_DROPPED_MALFORMED);
		return TC_ACT_SHOT;
	default:
		return CONTINUE;
	}
}

SEC("classifier")
int mesh_egress(struct __sk_buff *skb)
{
	struct packet p = {};
	int verdict = parse_verdict(skb, &p);
	if (verdict != CONTINUE)
		return verdict;
	/* ztunnel's own connections leave as they are. */
	if (marked(skb, CONFIG.inpod_mark))
		return TC_ACT_OK;
	/* Replies to kubelet probes go back to the node. */
	if (probe(&p, 0))
		return TC_ACT_OK;
	skb->mark = (skb->mark & ~CONFIG.mark_mask) | CONFIG.redirect_mark;
	count(MESH_EGRESS_REDIRECTED);
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

/* The SYN reuses the tuple of an earlier connection whose socket on our
 * side is in TIME_WAIT: ztunnel closed first, the client's side is gone and
 * its port was free again. A request socket for the same tuple cannot be
 * added beside the TIME_WAIT one, so a SYN given to ztunnel's listener would
 * be dropped on every retransmission for a minute (TPROXY removes the
 * TIME_WAIT socket itself; no helper lets us). Instead the SYN gets the ACK
 * flag and goes to the TIME_WAIT socket, which answers any segment with an
 * ACK; the client, still in SYN-SENT, answers that with a reset at exactly
 * the sequence TIME_WAIT expects, which removes it, and sends its SYN again
 * (Linux at once, about 10 ms; others when their timer fires), which finds
 * no socket and is captured. Measured: 12 ms instead of 2 ms for such a
 * connection; without this, a timeout. */
static __always_inline int clear_time_wait(struct __sk_buff *skb, struct packet *p)
{
	__u32 flags_off = p->tcp_off + 12; /* data offset and flags, one word */
	__be16 old, new;
	if (bpf_skb_load_bytes(skb, flags_off, &old, sizeof(old)) < 0) {
		count(MESH_DROPPED_MALFORMED);
		return TC_ACT_SHOT;
	}
	new = old | bpf_htons(0x0010); /* ACK */
	__u32 csum_off = p->tcp_off + 16;
	if (bpf_l4_csum_replace(skb, csum_off, old, new, sizeof(new)) < 0 ||
	    bpf_skb_store_bytes(skb, flags_off, &new, sizeof(new), 0) < 0) {
		count(MESH_DROPPED_MALFORMED);
		return TC_ACT_SHOT;
	}
	count(MESH_TIME_WAIT_CLEARED);
	return TC_ACT_OK;
}

SEC("classifier")
int mesh_ingress(struct __sk_buff *skb)
{
	struct packet p = {};
	int outbound = marked(skb, CONFIG.redirect_mark);
	int verdict = parse_verdict(skb, &p);
	if (verdict != CONTINUE)
		return verdict;
	if (outbound) {
		/* Sent to the gateway's MAC address; it is ours to receive now. */
		bpf_skb_change_type(skb, PACKET_HOST);
	}
	/* Packets of existing connections find their socket by the kernel's own
	 * lookup (routing delivers marked ones locally). */
	if (!p.has_tcp_header || !p.syn)
		return TC_ACT_OK;
	if (!outbound) {
		__u16 dport = bpf_ntohs(p.v6 ? p.tuple.ipv6.dport : p.tuple.ipv4.dport);
		if (dport == CONFIG.hbone_port || probe(&p, 1))
			return TC_ACT_OK;
	}
	/* A retransmitted SYN of a handshake already under way keeps its
	 * socket. A listener (the application's own) does not count: the
	 * connection is new and goes to ztunnel. */
	struct bpf_sock *sk = lookup(skb, &p);
	if (sk) {
		int state = sk->state;
		bpf_sk_release(sk);
		if (state == BPF_TCP_TIME_WAIT)
			return clear_time_wait(skb, &p);
		if (state != BPF_TCP_LISTEN)
			return TC_ACT_OK;
	}
	set_dport(&p, outbound ? CONFIG.outbound_port : CONFIG.inbound_plaintext_port);
	sk = lookup(skb, &p);
	if (!sk) {
		count(MESH_DROPPED_NO_LISTENER);
		return TC_ACT_SHOT;
	}
	if (sk->state != BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		count(MESH_DROPPED_NO_LISTENER);
		return TC_ACT_SHOT;
	}
	long err = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		count(MESH_DROPPED_ASSIGN);
		return TC_ACT_SHOT;
	}
	count(outbound ? MESH_OUTBOUND_CAPTURED : MESH_INBOUND_CAPTURED);
	return TC_ACT_OK;
}

char _license[] SEC("license") = "Apache-2.0";
