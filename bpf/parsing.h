/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * parsing.h: header parsers, one per layer, in the style of xdp-tutorial's
 * parsing_helpers.h. Each takes a cursor, checks bounds with lm_past_end()
 * before every read, advances the cursor past its header and returns the next
 * protocol, or -1 when the header is cut short or invalid.
 */
#ifndef LANMONITOR_PARSING_H
#define LANMONITOR_PARSING_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "types.h"

/* The one bounds check: true when [ptr, ptr+len) is not inside the frame. */
#define lm_past_end(ptr, len, end) ((void *)(ptr) + (len) > (void *)(end))

/* VLAN TPIDs: 802.1Q, 802.1ad (QinQ) and the pre-standard 0x9100. */
#define LM_ETH_P_8021Q 0x8100
#define LM_ETH_P_8021AD 0x88A8
#define LM_ETH_P_QINQ1 0x9100

/* Tags parsed before the ethertype is read; a frame with more is non-IP. */
#define LM_MAX_VLAN_TAGS 2

/* IPv6 extension headers walked before giving up on reaching L4. */
#define LM_MAX_IPV6_EXT_HDRS 8

/* IPv4 flags/fragment-offset field, host byte order (RFC 791). */
#define LM_IP_MF 0x2000
#define LM_IP_OFFMASK 0x1fff

/* IPv6 fragment header offset field, host byte order (RFC 8200 4.5). */
#define LM_IP6_OFFMASK 0xfff8

struct lm_cursor {
	void *pos;
};

/* ICMP (RFC 792) and ICMPv6 (RFC 4443) share these first 8 bytes. */
struct lm_icmp_hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 rest;
};

struct lm_vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* struct lm_packet: what the parsers learned about one frame. */
struct lm_packet {
	struct lm_addr src;
	struct lm_addr dst;
	__u16 src_port; /* host byte order; 0 when not known */
	__u16 dst_port;
	__u8 protocol;  /* IP protocol after IPv6 extension headers */
	__u8 ipv6;      /* 1 for IPv6, 0 for IPv4 */
	__u8 fragment;  /* 1 for any fragment (first, middle, last) */
	__u8 vlan_tags; /* tags seen, 0..LM_MAX_VLAN_TAGS+1 */
};

/*
 * lm_is_v4mapped: whether a 16-byte address is IPv4-mapped IPv6
 * (::ffff:a.b.c.d, RFC 4291 section 2.5.5.2): bytes 0..9 zero, 10..11 0xff.
 * Such an address in an IPv6 header is not valid on the wire (RFC 4038
 * section 4.2); it is the form lanmonitor stores IPv4 addresses in.
 */
static __always_inline int lm_is_v4mapped(const struct lm_addr *a)
{
	__u64 lo, hi;

	__builtin_memcpy(&lo, &a->bytes[0], 8);
	__builtin_memcpy(&hi, &a->bytes[8], 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return lo == 0 && (hi & 0xffffffffULL) == 0xffff0000ULL;
#else
	return lo == 0 && (hi >> 32) == 0x0000ffffULL;
#endif
}

static __always_inline int lm_is_vlan(__u16 proto)
{
	return proto == LM_ETH_P_8021Q || proto == LM_ETH_P_8021AD || proto == LM_ETH_P_QINQ1;
}

/*
 * lm_parse_eth: Ethernet header and up to LM_MAX_VLAN_TAGS tags.
 * Returns the ethertype behind the tags (host byte order), or -1 when the
 * frame ends inside them. With more than LM_MAX_VLAN_TAGS tags the returned
 * ethertype is still a VLAN TPID, which the caller counts as non-IP.
 */
static __always_inline int lm_parse_eth(struct lm_cursor *c, void *data_end, struct ethhdr **ethp,
					struct lm_packet *pkt)
{
	struct ethhdr *eth = c->pos;
	__u16 proto;
	int i;

	if (lm_past_end(eth, sizeof(*eth), data_end))
		return -1;
	*ethp = eth; /* stays NULL when the frame is shorter than a header */
	c->pos = eth + 1;
	proto = bpf_ntohs(eth->h_proto);

#pragma unroll
	for (i = 0; i < LM_MAX_VLAN_TAGS; i++) {
		struct lm_vlan_hdr *vh = c->pos;

		if (!lm_is_vlan(proto))
			break;
		if (lm_past_end(vh, sizeof(*vh), data_end))
			return -1;
		proto = bpf_ntohs(vh->encapsulated_proto);
		c->pos = vh + 1;
		pkt->vlan_tags++;
	}
	if (lm_is_vlan(proto))
		pkt->vlan_tags++;
	return proto;
}

/*
 * lm_parse_ipv4: IPv4 header with options (RFC 791). Rejects IHL < 5, a
 * header or total length running past the frame, and a total length shorter
 * than the header. On success *l3_len is the total length in bytes and
 * *has_l4 is 0 for a non-first fragment. Returns the protocol or -1.
 */
static __always_inline int lm_parse_ipv4(struct lm_cursor *c, void *data_end, struct lm_packet *pkt,
					 __u32 *l3_len, int *has_l4)
{
	struct iphdr *iph = c->pos;
	__u32 hdr_len, tot_len;
	__u16 frag;
	__u32 *dst;

	if (lm_past_end(iph, sizeof(*iph), data_end))
		return -1;
	if (iph->version != 4 || iph->ihl < 5)
		return -1;
	hdr_len = iph->ihl * 4;
	if (lm_past_end(iph, hdr_len, data_end))
		return -1;
	tot_len = bpf_ntohs(iph->tot_len);
	if (tot_len < hdr_len || (void *)iph + tot_len > data_end)
		return -1;

	/* ::ffff:a.b.c.d */
	dst = (__u32 *)pkt->src.bytes;
	dst[0] = 0;
	dst[1] = 0;
	dst[2] = bpf_htonl(0x0000ffff);
	dst[3] = iph->saddr;
	dst = (__u32 *)pkt->dst.bytes;
	dst[0] = 0;
	dst[1] = 0;
	dst[2] = bpf_htonl(0x0000ffff);
	dst[3] = iph->daddr;

	frag = bpf_ntohs(iph->frag_off);
	pkt->fragment = (frag & (LM_IP_MF | LM_IP_OFFMASK)) != 0;
	*has_l4 = (frag & LM_IP_OFFMASK) == 0;
	*l3_len = tot_len;
	c->pos = (void *)iph + hdr_len;
	return iph->protocol;
}

static __always_inline int lm_is_ipv6_ext(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING || nexthdr == IPPROTO_DSTOPTS ||
	       nexthdr == IPPROTO_FRAGMENT;
}

/*
 * lm_parse_ipv6: fixed header (RFC 8200) and a bounded walk over hop-by-hop,
 * routing, destination-options and fragment headers. Any other next header
 * ends the walk and is the protocol. Rejects a payload length running past
 * the frame and an extension header running past the payload. A chain longer
 * than LM_MAX_IPV6_EXT_HDRS is not malformed: the walk stops, the packet keeps
 * its addresses (so it is still counted and blocked) and has no ports.
 * Returns the protocol or -1.
 */
static __always_inline int lm_parse_ipv6(struct lm_cursor *c, void *data_end, struct lm_packet *pkt,
					 __u32 *l3_len, int *has_l4)
{
	struct ipv6hdr *ip6h = c->pos;
	__u32 off = sizeof(*ip6h), len;
	__u8 nexthdr;
	int i;

	if (lm_past_end(ip6h, sizeof(*ip6h), data_end))
		return -1;
	if (ip6h->version != 6)
		return -1;
	len = sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len);
	if ((void *)ip6h + len > data_end)
		return -1;
	__builtin_memcpy(pkt->src.bytes, &ip6h->saddr, 16);
	__builtin_memcpy(pkt->dst.bytes, &ip6h->daddr, 16);
	pkt->ipv6 = 1;
	*l3_len = len;
	*has_l4 = 1;
	nexthdr = ip6h->nexthdr;
	c->pos = ip6h + 1;

	for (i = 0; i < LM_MAX_IPV6_EXT_HDRS; i++) {
		if (nexthdr == IPPROTO_FRAGMENT) {
			struct frag_hdr {
				__u8 nexthdr;
				__u8 reserved;
				__be16 frag_off;
				__be32 identification;
			} *fh = c->pos;

			if (lm_past_end(fh, sizeof(*fh), data_end) || off + sizeof(*fh) > len)
				return -1;
			pkt->fragment = 1;
			nexthdr = fh->nexthdr;
			c->pos = fh + 1;
			off += sizeof(*fh);
			if (bpf_ntohs(fh->frag_off) & LM_IP6_OFFMASK) {
				/* A non-first fragment: what follows is payload. */
				*has_l4 = 0;
				return nexthdr;
			}
		} else if (lm_is_ipv6_ext(nexthdr)) {
			struct ipv6_opt_hdr *oh = c->pos;
			__u32 hlen;

			if (lm_past_end(oh, sizeof(*oh), data_end))
				return -1;
			hlen = ((__u32)oh->hdrlen + 1) * 8;
			if (lm_past_end(oh, hlen, data_end) || off + hlen > len)
				return -1;
			nexthdr = oh->nexthdr;
			c->pos = (void *)oh + hlen;
			off += hlen;
		} else {
			return nexthdr;
		}
	}
	if (lm_is_ipv6_ext(nexthdr))
		*has_l4 = 0;
	return nexthdr;
}

/*
 * lm_parse_l4: ports of TCP and UDP, type and code of ICMP/ICMPv6, from a
 * header that must lie inside the frame and the IP payload (l4_room bytes).
 * Returns 0, or -1 when a TCP, UDP or ICMP header is cut short (or a TCP
 * data offset is below 5). Other protocols carry no ports and always return 0.
 */
static __always_inline int lm_parse_l4(struct lm_cursor *c, void *data_end, struct lm_packet *pkt,
				       __u32 l4_room)
{
	switch (pkt->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *th = c->pos;

		if (lm_past_end(th, sizeof(*th), data_end) || l4_room < sizeof(*th) || th->doff < 5)
			return -1;
		pkt->src_port = bpf_ntohs(th->source);
		pkt->dst_port = bpf_ntohs(th->dest);
		return 0;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh = c->pos;

		if (lm_past_end(uh, sizeof(*uh), data_end) || l4_room < sizeof(*uh))
			return -1;
		pkt->src_port = bpf_ntohs(uh->source);
		pkt->dst_port = bpf_ntohs(uh->dest);
		return 0;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		struct lm_icmp_hdr *ih = c->pos;

		if (lm_past_end(ih, sizeof(*ih), data_end) || l4_room < sizeof(*ih))
			return -1;
		pkt->src_port = ih->type;
		pkt->dst_port = ih->code;
		return 0;
	}
	}
	return 0;
}

#endif /* LANMONITOR_PARSING_H */
