/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * maps.h: every map of the XDP program. The max_entries written here are
 * placeholders: Go sets the real sizes before load (bpf.Config).
 */
#ifndef LANMONITOR_MAPS_H
#define LANMONITOR_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "types.h"

/*
 * The talker table, in slots. lm_slot_of gives a source its slot; the slot's
 * counters are in lm_talker_counts, one stripe of lm_slots entries per
 * possible CPU (index cpu * lm_slots + slot, written only by that CPU) and a
 * last stripe that only Go writes (counts carried over from an earlier
 * table), and its source in lm_talker_addrs. Both arrays are BPF_F_MMAPABLE: the agent
 * reads them as memory instead of looking entries up one by one. A new
 * source takes a slot from lm_free_slots (freed by the agent, which zeroes
 * them first) or else the next never used one (lm_slot_next); when there is
 * none it is not tracked (lm_stats.talkers_full) until the agent frees the
 * slots of idle sources. A slot is in use while lm_slot_of names it.
 */

/* The number of slots: set by Go before load (bpf.Config.MaxTrackedSources). */
volatile const __u32 lm_slots = 65536;

/* Key: struct lm_addr (source address). Value: __u32 slot. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	/* Not preallocated: memory follows the sources. A deleted element
	 * stays readable memory, but since kernel 6.1 (bpf_mem_alloc) it may
	 * be handed to a new element at once, like SLAB_TYPESAFE_BY_RCU: a
	 * program that looked the source up just before its eviction can read
	 * another source's slot and count one frame there. The slot itself is
	 * reused only after the agent waited an RCU grace period
	 * (bpf/talkers.go: freeSlots), so it is never counted for two sources
	 * at once. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lm_addr);
	__type(value, __u32);
} lm_slot_of SEC(".maps");

/* Key: __u32 stripe * lm_slots + slot. Value: struct lm_talker. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct lm_talker);
} lm_talker_counts SEC(".maps");

/* Key: __u32 slot. Value: struct lm_addr, the slot's source. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct lm_addr);
} lm_talker_addrs SEC(".maps");

/* Slots the agent freed (zeroed), for new sources. Value: __u32 slot. */
struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 65536);
	__type(value, __u32);
} lm_free_slots SEC(".maps");

/* Key: __u32 0. Value: __u32, the lowest slot never handed out. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} lm_slot_next SEC(".maps");

/*
 * Key: struct lm_rule_key (masked prefix, length, table). Value: struct lm_rule.
 * One exact-match entry per prefix; the longest-prefix match is done by
 * probing the lengths present (lm_settings.lengths), longest first, each probe
 * guarded by lm_filter.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lm_rule_key);
	__type(value, struct lm_rule);
} lm_rules SEC(".maps");

/*
 * Key: __u32 word index. Value: __u64, 64 bits of a Bloom filter over the
 * keys of lm_rules (two bits per key, see lm_rule_hash). A clear bit proves
 * a key absent without a hash-table lookup. Maintained by Go.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} lm_filter SEC(".maps");

/*
 * Key: __u32 rule ID. Value: struct lm_rule_counters per CPU. A hash rather
 * than an array so that rule IDs can be any number (the controller's go up
 * to 65535) while memory follows the number of rules: Go creates an entry
 * with the first prefix of a rule and deletes it with the last one.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct lm_rule_counters);
} lm_rule_stats SEC(".maps");

/* Key: __u32 0. Value: struct lm_stats per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lm_stats);
} lm_global_stats SEC(".maps");

/* Key: __u32 0. Value: struct lm_config. Written by Go at any time. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lm_config);
} lm_settings SEC(".maps");

/* Ring buffer of struct lm_flow_sample records. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
} lm_samples SEC(".maps");

/* Emits struct lm_flow_sample into BTF for bpf2go; never used. */
const struct lm_flow_sample lm_unused_flow_sample __attribute__((unused));

#endif /* LANMONITOR_MAPS_H */
