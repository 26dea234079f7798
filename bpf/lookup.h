/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * lookup.h: longest-prefix match over the rule tables.
 *
 * Semantics are those of an LPM trie keyed by {prefix length, address}, but
 * the structure is faster for the common case of a packet that matches
 * nothing (measured in docs/benchmarks.md):
 *   - a table with no prefix of the packet's family costs one load of a
 *     bitmask and nothing else;
 *   - only the prefix lengths present are probed, longest first, so a
 *     blocklist of /32s and /24s costs two probes, whatever its size;
 *   - each probe first tests two bits of a Bloom filter held in an array map
 *     (inlined by the verifier, one cache line), and only when both are set
 *     does an exact-match hash lookup follow. Host entries (/32, /128) are
 *     just the longest length.
 * Every table exists in two generations (struct lm_config.gen); a frame's
 * lookups all use the generation it read at its start, and Go only writes
 * the other one, so each frame sees one whole configuration.
 */
#ifndef LANMONITOR_LOOKUP_H
#define LANMONITOR_LOOKUP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "types.h"
#include "maps.h"

/* Words in lm_filter minus one (a power of two minus one). Set by Go. */
volatile const __u32 lm_filter_word_mask = 0;

/*
 * lm_rule_hash: hash of a rule key for the Bloom filter: two multiplications
 * by odd constants (the 64-bit golden ratio and MurmurHash3's), each followed
 * by a fold of the high half into the low half. lo and hi are the masked
 * address bytes 0..7 and 8..15 loaded in the machine's byte order.
 * Go: bpf.ruleHash, which must stay identical.
 */
static __always_inline __u64 lm_rule_hash(__u64 lo, __u64 hi, __u32 prefix_len, __u32 table)
{
	__u64 h = (hi ^ ((__u64)table << 8 | prefix_len)) * 0x9e3779b97f4a7c15ULL;

	h = (h ^ (h >> 32) ^ lo) * 0xc4ceb9fe1a85ec53ULL;
	return h ^ (h >> 32);
}

/*
 * lm_probe: the entry of lm_rules for the masked address lo:hi at this
 * length, or NULL. The key is written only when both filter bits are set, so
 * a miss costs the hash, one inlined array load and a bit test.
 */
static __always_inline struct lm_rule *lm_probe(__u64 lo, __u64 hi, __u32 prefix_len, __u32 table)
{
	struct lm_rule_key key = {};
	__u64 h, bits, *word;
	__u32 idx;

	h = lm_rule_hash(lo, hi, prefix_len, table);
	idx = (__u32)h & lm_filter_word_mask;
	word = bpf_map_lookup_elem(&lm_filter, &idx);
	if (!word)
		return NULL;
	bits = (1ULL << ((h >> 32) & 63)) | (1ULL << ((h >> 40) & 63));
	if ((*word & bits) != bits)
		return NULL;
	__builtin_memcpy(&key.addr.bytes[0], &lo, 8);
	__builtin_memcpy(&key.addr.bytes[8], &hi, 8);
	key.prefix_len = prefix_len;
	key.table = table;
	return bpf_map_lookup_elem(&lm_rules, &key);
}

/* lm_netmask32: the network-order mask of the first bits (0..32) of a word. */
static __always_inline __u32 lm_netmask32(__s32 bits)
{
	if (bits <= 0)
		return 0;
	if (bits >= 32)
		return 0xffffffff;
	return bpf_htonl(0xffffffffU << (32 - bits));
}

/* lm_netmask64: the mask of the first bits (0..64) of 8 address bytes
 * loaded in the machine's byte order. */
static __always_inline __u64 lm_netmask64(__s32 bits)
{
	if (bits <= 0)
		return 0;
	if (bits >= 64)
		return ~0ULL;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return __builtin_bswap64(~0ULL << (64 - bits));
#else
	return ~0ULL << (64 - bits);
#endif
}

/*
 * The walks below are fully unrolled: every prefix length is a constant, so
 * masks fold at compile time, and a length costs one bit test when absent.
 * Lengths are tested in groups of eight first, so a table with a handful of
 * lengths skips most of them by group. A data-dependent loop (or bpf_loop,
 * whose callback costs an indirect call per length) measured 2-4x slower.
 */

/*
 * lm_walk_v4: longest match of an IPv4-mapped address; lengths: bit n = /n.
 * The address's last 8 bytes (00 00 ff ff a b c d) are one word; bytes 0..7
 * are zero.
 */
static __always_inline struct lm_rule *lm_walk_v4(const struct lm_addr *a, __u8 table, __u64 lengths)
{
	struct lm_rule *r;
	__u64 hi;
	int g, b;

	__builtin_memcpy(&hi, &a->bytes[8], 8);
	if (lengths & (1ULL << 32)) {
		r = lm_probe(0, hi, 96 + 32, table);
		if (r)
			return r;
	}
#pragma unroll
	for (g = 3; g >= 0; g--) {
		if (!(lengths & (0xffULL << (8 * g))))
			continue;
#pragma unroll
		for (b = 7; b >= 0; b--) {
			const int n = 8 * g + b;

			if (!(lengths & (1ULL << n)))
				continue;
			r = lm_probe(0, hi & lm_netmask64(64 + n - 32), 96 + n, table);
			if (r)
				return r;
		}
	}
	return NULL;
}

/* lm_probe6: probe IPv6 length n (a constant after unrolling). */
static __always_inline struct lm_rule *lm_probe6(__u64 lo, __u64 hi, const int n, __u8 table)
{
	return lm_probe(lo & lm_netmask64(n), hi & lm_netmask64(n - 64), n, table);
}

/* lm_walk_v6: longest match of an IPv6 address; lengths: bit n%64 of word n/64. */
static __always_inline struct lm_rule *lm_walk_v6(const struct lm_addr *a, __u8 table, const __u64 *lengths)
{
	struct lm_rule *r;
	__u64 lo, hi;
	int word, g, b;

	__builtin_memcpy(&lo, &a->bytes[0], 8);
	__builtin_memcpy(&hi, &a->bytes[8], 8);
	if (lengths[2] & 1) {
		r = lm_probe(lo, hi, 128, table);
		if (r)
			return r;
	}
#pragma unroll
	for (word = 1; word >= 0; word--) {
		const __u64 l = lengths[word];

		if (!l)
			continue;
#pragma unroll
		for (g = 7; g >= 0; g--) {
			if (!(l & (0xffULL << (8 * g))))
				continue;
#pragma unroll
			for (b = 7; b >= 0; b--) {
				if (!(l & (1ULL << (8 * g + b))))
					continue;
				r = lm_probe6(lo, hi, 64 * word + 8 * g + b, table);
				if (r)
					return r;
			}
		}
	}
	return NULL;
}

/* lm_has_lengths: whether a table holds any prefix of the family. */
static __always_inline int lm_has_lengths(const struct lm_prefix_lengths *l, int ipv6)
{
	if (ipv6)
		return (l->v6[0] | l->v6[1] | l->v6[2]) != 0;
	return l->v4 != 0;
}

/* Result of lm_lookup: found flag, mode and rule ID packed in a scalar. */
#define LM_FOUND (1ULL << 40)
#define LM_RESULT_MODE(res) ((__u8)((res) >> 32))
#define LM_RESULT_RULE(res) ((__u32)(res))

/*
 * lm_lookup: longest-prefix match of addr in table (enum lm_table plus
 * LM_TABLE_COUNT * generation). lengths are that table's prefix lengths in
 * that generation; ipv6 selects the family (0 for an IPv4-mapped address).
 * Returns 0 when nothing matches, else LM_FOUND | mode << 32 | rule ID.
 *
 * A global (not inlined) function: the verifier checks it once, on its own,
 * rather than at each of the four call sites, and the unrolled walks exist
 * once in the JITed image.
 */
__noinline __u64 lm_lookup(const struct lm_prefix_lengths *lengths, const struct lm_addr *addr, __u32 table,
			   __u32 ipv6)
{
	struct lm_rule *r;

	if (!lengths || !addr)
		return 0;
	if (ipv6)
		r = lm_walk_v6(addr, table, lengths->v6);
	else
		r = lm_walk_v4(addr, table, lengths->v4);
	if (!r)
		return 0;
	return LM_FOUND | (__u64)r->mode << 32 | r->rule_id;
}

#endif /* LANMONITOR_LOOKUP_H */
