//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * lanmonitor.c: the XDP program. Read top to bottom, it follows a frame:
 * count it, parse it, count its source, match it against the blocklist,
 * maybe sample it, return the verdict.
 *
 * Verdicts: XDP_PASS or XDP_DROP, never XDP_ABORTED. A frame that does not
 * parse is passed and counted as malformed; the kernel's own stack drops such
 * frames after us (ip_rcv_core and ipv6_rcv check the same lengths), so
 * passing them opens no hole in the blocklist.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "types.h"
#include "maps.h"
#include "parsing.h"
#include "lookup.h"

#define LM_EEXIST 17

char __license[] SEC("license") = "Dual BSD/GPL";

/*
 * lm_is_local: whether the frame is addressed to this interface: its own
 * MAC, broadcast, or any multicast address (I/G bit set, IEEE 802-2014 8.2).
 */
static __always_inline int lm_is_local(const struct ethhdr *eth, const struct lm_config *cfg)
{
	__u32 a32, b32;
	__u16 a16, b16;

	if (eth->h_dest[0] & 1)
		return 1;
	__builtin_memcpy(&a32, &eth->h_dest[0], 4);
	__builtin_memcpy(&a16, &eth->h_dest[4], 2);
	__builtin_memcpy(&b32, &cfg->if_mac[0], 4);
	__builtin_memcpy(&b16, &cfg->if_mac[4], 2);
	return a32 == b32 && a16 == b16;
}

/*
 * lm_take_slot: give the new source src a slot (maps.h: the talker table)
 * and return 0 with the slot in *slot, or -1 if it is not tracked. If
 * another CPU gave src a slot first, that slot is returned and ours goes
 * back to lm_free_slots, so no frame is lost.
 */
static __always_inline int lm_take_slot(struct lm_stats *st, const struct lm_addr *src, __u32 *slot)
{
	__u32 zero = 0;
	struct lm_addr *owner;
	__u32 *next, *found;
	long err;

	if (bpf_map_pop_elem(&lm_free_slots, slot)) {
		next = bpf_map_lookup_elem(&lm_slot_next, &zero);
		/* Read before adding, so that a full table's next stays put. */
		if (!next || *next >= lm_slots) {
			st->talkers_full++;
			return -1;
		}
		*slot = __sync_fetch_and_add(next, 1);
		if (*slot >= lm_slots) {
			st->talkers_full++;
			return -1;
		}
	}
	owner = bpf_map_lookup_elem(&lm_talker_addrs, slot);
	if (!owner) {
		st->talker_insert_errors++;
		return -1;
	}
	*owner = *src;
	err = bpf_map_update_elem(&lm_slot_of, src, slot, BPF_NOEXIST);
	if (err == 0) {
		st->talker_inserts++;
		return 0;
	}
	/* The queue holds every slot, so this fails only on a lock the
	 * kernel gave up on (queue maps take rqspinlock, kernel 6.15+): the slot
	 * is then lost to this table, and counted. */
	if (bpf_map_push_elem(&lm_free_slots, slot, 0))
		st->talker_insert_errors++;
	if (err == -LM_EEXIST) {
		found = bpf_map_lookup_elem(&lm_slot_of, src);
		if (found) {
			*slot = *found;
			return 0;
		}
	}
	st->talker_insert_errors++;
	return -1;
}

/*
 * lm_count_talker: add one frame of len bytes to the source's counters in
 * this CPU's stripe of lm_talker_counts, giving a new source a slot first.
 */
static __always_inline void lm_count_talker(struct lm_stats *st, const struct lm_addr *src, __u64 len, int local)
{
	__u32 *found = bpf_map_lookup_elem(&lm_slot_of, src);
	struct lm_talker *t;
	__u32 slot, idx;

	if (found)
		slot = *found;
	else if (lm_take_slot(st, src, &slot))
		return;
	idx = bpf_get_smp_processor_id() * lm_slots + slot;
	t = bpf_map_lookup_elem(&lm_talker_counts, &idx);
	if (!t) {
		st->talker_insert_errors++;
		return;
	}
	t->packets++;
	t->bytes += len;
	if (local)
		t->local_packets++;
	else
		t->snooped_packets++;
}

/*
 * lm_apply_rule: count a blocklist match of addr against rule r and decide;
 * lengths are the prefix lengths of generation gen's tables.
 * A protected address is exempted (passed). An Enforce rule drops frames
 * addressed to this interface; snooped frames are only counted, since the
 * stack discards frames for other hosts anyway. Audit rules only count.
 */
static __always_inline int lm_apply_rule(const struct lm_prefix_lengths *lengths, __u32 gen, struct lm_stats *st,
					 __u32 rule_id, __u8 mode, const struct lm_addr *addr, int ipv6, int local)
{
	struct lm_rule_counters *rc = bpf_map_lookup_elem(&lm_rule_stats, &rule_id);

	if (rc)
		rc->matched++;
	if (lm_has_lengths(&lengths[LM_TABLE_PROTECTED], ipv6) &&
	    lm_lookup(&lengths[LM_TABLE_PROTECTED], addr, LM_TABLE_PROTECTED + LM_TABLE_COUNT * gen, ipv6)) {
		if (rc)
			rc->exempted++;
		st->exempted++;
		return XDP_PASS;
	}
	if (mode == LM_MODE_ENFORCE && local) {
		if (rc)
			rc->dropped++;
		return XDP_DROP;
	}
	return XDP_PASS;
}

static __always_inline void lm_sample(struct lm_stats *st, struct xdp_md *ctx, const struct lm_packet *pkt,
				      int local, int verdict, __u32 rule_id, __u32 len)
{
	struct lm_flow_sample *s = bpf_ringbuf_reserve(&lm_samples, sizeof(*s), 0);

	if (!s) {
		st->samples_lost++;
		return;
	}
	__builtin_memcpy(&s->src, &pkt->src, sizeof(s->src));
	__builtin_memcpy(&s->dst, &pkt->dst, sizeof(s->dst));
	s->src_port = pkt->src_port;
	s->dst_port = pkt->dst_port;
	s->protocol = pkt->protocol;
	s->flags = (local ? LM_SAMPLE_LOCAL : 0) | (pkt->fragment ? LM_SAMPLE_FRAGMENT : 0) |
		   (pkt->ipv6 ? LM_SAMPLE_IPV6 : 0);
	s->verdict = verdict;
	s->pad = 0;
	s->rule_id = rule_id;
	s->frame_len = len;
	s->ifindex = ctx->ingress_ifindex;
	s->pad2 = 0;
	bpf_ringbuf_submit(s, 0);
}

SEC("xdp")
int lanmonitor_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct lm_cursor c = { .pos = data };
	struct lm_packet pkt = {};
	struct lm_config *cfg;
	const struct lm_prefix_lengths *lengths;
	struct lm_stats *st;
	struct ethhdr *eth = NULL;
	__u32 zero = 0, l3_len = 0, rule_id = 0, gen;
	__u64 len = data_end - data;
	int proto, has_l4 = 0, local = 0, verdict = XDP_PASS, src6, dst6;
	void *l3;

	st = bpf_map_lookup_elem(&lm_global_stats, &zero);
	cfg = bpf_map_lookup_elem(&lm_settings, &zero);
	if (!st || !cfg)
		return XDP_PASS;
	/* One generation of the rule tables for the whole frame. */
	gen = *(volatile __u32 *)&cfg->gen & 1;
	lengths = cfg->lengths[gen];

	/* Layer 2: Ethernet and VLAN tags. */
	proto = lm_parse_eth(&c, data_end, &eth, &pkt);
	if (eth) {
		local = lm_is_local(eth, cfg);
		if (!local && !(cfg->flags & LM_FLAG_PROMISCUOUS)) {
			/* Not meant to be seen: what a MAC filter would drop. */
			st->filtered_snooped++;
			return XDP_PASS;
		}
	}
	st->packets++;
	st->bytes += len;
	if (pkt.vlan_tags)
		st->vlan_tagged++;
	if (proto < 0)
		goto malformed;
	if (local)
		st->local++;
	else
		st->snooped++;

	/* Layer 3: IPv4 or IPv6 (behind at most LM_MAX_VLAN_TAGS tags). */
	l3 = c.pos;
	if (proto == ETH_P_IP)
		proto = lm_parse_ipv4(&c, data_end, &pkt, &l3_len, &has_l4);
	else if (proto == ETH_P_IPV6)
		proto = lm_parse_ipv6(&c, data_end, &pkt, &l3_len, &has_l4);
	else
		goto non_ip;
	if (proto < 0)
		goto malformed;
	pkt.protocol = proto;

	/* Layer 4: ports. A first fragment may legally end inside them. */
	if (has_l4) {
		__u32 off = c.pos - l3;

		if (lm_parse_l4(&c, data_end, &pkt, l3_len - off) < 0 && !pkt.fragment)
			goto malformed;
	}

	if (pkt.ipv6)
		st->ipv6++;
	else
		st->ipv4++;
	if (pkt.fragment)
		st->fragments++;

	/*
	 * An IPv6 header carrying an IPv4-mapped address (::ffff:a.b.c.d) is
	 * not valid on the wire, and it is the form IPv4 addresses take in our
	 * maps: such a source is not counted as a talker (it would add to the
	 * IPv4 host's counters), and each such address is matched against the
	 * IPv4 prefixes, so that it cannot dodge an IPv4 block.
	 */
	src6 = pkt.ipv6;
	dst6 = pkt.ipv6;
	if (pkt.ipv6) {
		if (lm_is_v4mapped(&pkt.src))
			src6 = 0;
		if (lm_is_v4mapped(&pkt.dst))
			dst6 = 0;
		if (!src6 || !dst6)
			st->v4_mapped++;
	}
	if (src6 == pkt.ipv6)
		lm_count_talker(st, &pkt.src, len, local);

	/* Blocklist: source, then destination, longest prefix wins. */
	if (lm_has_lengths(&lengths[LM_TABLE_SOURCE], src6)) {
		__u64 res = lm_lookup(&lengths[LM_TABLE_SOURCE], &pkt.src, LM_TABLE_SOURCE + LM_TABLE_COUNT * gen, src6);

		if (res) {
			rule_id = LM_RESULT_RULE(res);
			verdict = lm_apply_rule(lengths, gen, st, rule_id, LM_RESULT_MODE(res), &pkt.src, src6, local);
		}
	}
	if (verdict == XDP_PASS && lm_has_lengths(&lengths[LM_TABLE_DESTINATION], dst6)) {
		__u64 res = lm_lookup(&lengths[LM_TABLE_DESTINATION], &pkt.dst, LM_TABLE_DESTINATION + LM_TABLE_COUNT * gen,
				      dst6);

		/* A Both rule matching source and destination counts once. */
		if (res && LM_RESULT_RULE(res) != rule_id) {
			rule_id = LM_RESULT_RULE(res);
			verdict = lm_apply_rule(lengths, gen, st, rule_id, LM_RESULT_MODE(res), &pkt.dst, dst6, local);
		}
	}

	if (cfg->sample_rate && bpf_get_prandom_u32() % cfg->sample_rate == 0)
		lm_sample(st, ctx, &pkt, local, verdict, rule_id, len);

	if (verdict == XDP_DROP)
		st->dropped++;
	else
		st->passed++;
	return verdict;

malformed:
	st->malformed++;
	st->passed++;
	return XDP_PASS;
non_ip:
	st->non_ip++;
	st->passed++;
	return XDP_PASS;
}
