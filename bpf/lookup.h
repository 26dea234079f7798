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
 * Go keeps lm_rules, lm_filter and lm_settings.lengths consistent (entries are
 * written before their filter bits and length bits, and removed after).
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

/* Finalizer of MurmurHash3 (public domain). Go: bpf.mix64. */
static __always_inline __u64 lm_mix64(__u64 h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/*
 * lm_rule_hash: hash of a rule key. lo and hi are the address bytes 0..7 and
 * 8..15 loaded in the machine's byte order. Go: bpf.ruleHash.
 */
static __always_inline __u64 lm_rule_hash(__u64 lo, __u64 hi, __u32 prefix_len, __u32 table)
{
	return lm_mix64(lo ^ lm_mix64(hi ^ ((__u64)table << 8 | prefix_len)));
}

/* lm_probe: the entry for exactly this key, or NULL. */
static __always_inline struct lm_rule *lm_probe(struct lm_rule_key *key)
{
	__u64 lo, hi, h, bits, *word;
	__u32 idx;

	__builtin_memcpy(&lo, &key->addr.bytes[0], 8);
	__builtin_memcpy(&hi, &key->addr.bytes[8], 8);
	h = lm_rule_hash(lo, hi, key->prefix_len, key->table);
	idx = (__u32)h & lm_filter_word_mask;
	word = bpf_map_lookup_elem(&lm_filter, &idx);
	if (!word)
		return NULL;
	bits = (1ULL << ((h >> 32) & 63)) | (1ULL << ((h >> 40) & 63));
	if ((*word & bits) != bits)
		return NULL;
	return bpf_map_lookup_elem(&lm_rules, key);
}

/* lm_fls64: 1 + the index of the highest set bit of x; x must not be 0. */
static __always_inline __u32 lm_fls64(__u64 x)
{
	__u32 n = 64;

	if (!(x & 0xffffffff00000000ULL)) {
		x <<= 32;
		n -= 32;
	}
	if (!(x & 0xffff000000000000ULL)) {
		x <<= 16;
		n -= 16;
	}
	if (!(x & 0xff00000000000000ULL)) {
		x <<= 8;
		n -= 8;
	}
	if (!(x & 0xf000000000000000ULL)) {
		x <<= 4;
		n -= 4;
	}
	if (!(x & 0xc000000000000000ULL)) {
		x <<= 2;
		n -= 2;
	}
	if (!(x & 0x8000000000000000ULL))
		n -= 1;
	return n;
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

/* struct lm_walk: the state of one longest-prefix-match walk (bpf_loop). */
struct lm_walk {
	struct lm_rule_key key;
	__u32 addr[4];   /* the address, network byte order words */
	__u64 left[3];   /* prefix-length bits not probed yet (IPv4: left[0]) */
	struct lm_rule *found;
};

/*
 * lm_walk_v4: one probe of an IPv4 walk: the longest length left. Returns 1
 * (stop) when found or no length is left, 0 to go on.
 */
static long lm_walk_v4(__u64 index, void *ctx)
{
	struct lm_walk *w = ctx;
	__u32 n, masked;

	if (!w->left[0])
		return 1;
	n = lm_fls64(w->left[0]) - 1;
	w->left[0] &= ~(1ULL << n);
	masked = w->addr[3] & lm_netmask32(n);
	__builtin_memcpy(&w->key.addr.bytes[12], &masked, 4);
	w->key.prefix_len = 96 + n;
	w->found = lm_probe(&w->key);
	return w->found != NULL;
}

/* lm_walk_v6: one probe of an IPv6 walk, as lm_walk_v4. */
static long lm_walk_v6(__u64 index, void *ctx)
{
	struct lm_walk *w = ctx;
	__u32 masked[4], word, bit;
	__s32 n;
	int k;

	if (w->left[2])
		word = 2;
	else if (w->left[1])
		word = 1;
	else if (w->left[0])
		word = 0;
	else
		return 1;
	bit = lm_fls64(w->left[word]) - 1;
	w->left[word] &= ~(1ULL << bit);
	n = word * 64 + bit;
#pragma unroll
	for (k = 0; k < 4; k++)
		masked[k] = w->addr[k] & lm_netmask32(n - 32 * k);
	__builtin_memcpy(w->key.addr.bytes, masked, 16);
	w->key.prefix_len = n;
	w->found = lm_probe(&w->key);
	return w->found != NULL;
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
 * lm_lookup: longest-prefix match of addr in table. lengths are that table's
 * prefix lengths. Returns 0 when nothing matches, else LM_FOUND | mode << 32 |
 * rule ID.
 *
 * A global (not inlined) function walking with bpf_loop: the verifier checks
 * it once, on its own, instead of once per call site and per iteration, which
 * exceeds the 1M-instruction complexity limit. Kernels since 6.0 inline
 * bpf_loop into a plain loop, so the walk costs no indirect call.
 */
__noinline __u64 lm_lookup(const struct lm_prefix_lengths *lengths, const struct lm_addr *addr, __u32 table,
			   __u32 ipv6)
{
	struct lm_walk w = {};

	if (!lengths || !addr)
		return 0;
	__builtin_memcpy(w.addr, addr->bytes, 16);
	__builtin_memcpy(w.key.addr.bytes, addr->bytes, 16);
	w.key.table = table;
	if (ipv6) {
		w.left[0] = lengths->v6[0];
		w.left[1] = lengths->v6[1];
		w.left[2] = lengths->v6[2];
		bpf_loop(129, lm_walk_v6, &w, 0);
	} else {
		w.left[0] = lengths->v4;
		bpf_loop(33, lm_walk_v4, &w, 0);
	}
	if (!w.found)
		return 0;
	return LM_FOUND | (__u64)w.found->mode << 32 | w.found->rule_id;
}

#endif /* LANMONITOR_LOOKUP_H */
