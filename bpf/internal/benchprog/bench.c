//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bench.c: baselines for `make bench`, compiled only into the benchmarks.
 *
 * xdp_floor returns XDP_PASS: the cost of BPF_PROG_TEST_RUN itself.
 *
 * xdp_hash_count is the design of the original Aya xdp-drop / byte-counting
 * example, for comparison: a blocklist in a plain HASH, and per-source
 * counters in a plain HASH of 1024 entries updated by lookup, copy of the
 * value, and update with the new value. The read-modify-write of a value
 * shared by all CPUs loses counts when two CPUs update the same source;
 * bench_runs (per CPU, exact) counts executions so the loss can be measured.
 *
 * xdp_lru_count and xdp_slot_count compare two layouts of the per-source
 * counters for reading them all from Go (docs/benchmarks.md, "Two talker
 * layouts"). xdp_lru_count is lanmonitor's layout alone, for its cost per
 * packet: a per-CPU LRU hash from the source to its counters (Go reads it
 * with BPF_MAP_LOOKUP_BATCH, measured on lanmonitor's own map). xdp_slot_count
 * gives each new source a slot (a shared counter handed out with an atomic
 * fetch-and-add, a hash from the source to its slot) and keeps the counters
 * in a BPF_F_MMAPABLE array, one stripe of slot_cap entries per CPU, and
 * the slot's address in a second mmapable array: Go reads both from
 * memory. The slot layout frees nothing: once slot_cap sources are seen,
 * new ones go uncounted; a product would need the agent to evict idle
 * slots and reuse them after an RCU grace period.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual BSD/GPL";

struct bench_addr {
	__u8 bytes[16];
};

struct bench_counts {
	__u64 packets;
	__u64 bytes;
};

/* Key: struct bench_addr. Value: __u32 (unused). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct bench_addr);
	__type(value, __u32);
} bench_blocklist SEC(".maps");

/* Key: struct bench_addr (source). Value: struct bench_counts, shared. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct bench_addr);
	__type(value, struct bench_counts);
} bench_counters SEC(".maps");

/* Key: __u32 0. Value: __u64 executions, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bench_runs SEC(".maps");

SEC("xdp")
int xdp_floor(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int xdp_hash_count(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct bench_addr src = {};
	struct bench_counts next = {}, *cur;
	__u32 zero = 0;
	__u64 *runs;

	runs = bpf_map_lookup_elem(&bench_runs, &zero);
	if (runs)
		(*runs)++;
	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);

		if ((void *)(iph + 1) > data_end)
			return XDP_PASS;
		src.bytes[10] = 0xff;
		src.bytes[11] = 0xff;
		__builtin_memcpy(&src.bytes[12], &iph->saddr, 4);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = (void *)(eth + 1);

		if ((void *)(ip6h + 1) > data_end)
			return XDP_PASS;
		__builtin_memcpy(src.bytes, &ip6h->saddr, 16);
	} else {
		return XDP_PASS;
	}
	if (bpf_map_lookup_elem(&bench_blocklist, &src))
		return XDP_DROP;

	cur = bpf_map_lookup_elem(&bench_counters, &src);
	if (cur)
		next = *cur;
	next.packets++;
	next.bytes += data_end - data;
	bpf_map_update_elem(&bench_counters, &src, &next, BPF_ANY);
	return XDP_PASS;
}

/* The per-source counters of the two layouts (struct lm_talker's shape). */
struct bench_slot {
	__u64 packets;
	__u64 bytes;
	__u64 local_packets;
	__u64 snooped_packets;
};

/* The slots of xdp_slot_count: set by Go before load (Load). */
volatile const __u32 slot_cap = 65536;

/* Key: struct bench_addr. Value: struct bench_slot per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct bench_addr);
	__type(value, struct bench_slot);
} bench_lru_counts SEC(".maps");

/* Key: struct bench_addr. Value: __u32 slot. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct bench_addr);
	__type(value, __u32);
} bench_slot_of SEC(".maps");

/* Key: __u32 cpu * slot_cap + slot. Value: struct bench_slot (only that CPU writes it). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct bench_slot);
} bench_slot_counts SEC(".maps");

/* Key: __u32 slot. Value: struct bench_addr, the slot's source. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct bench_addr);
} bench_slot_addrs SEC(".maps");

/* Key: __u32 0. Value: __u32, the next free slot (shared by all CPUs). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bench_slot_next SEC(".maps");

/* bench_source reads the frame's IPv4 (mapped) or IPv6 source into src. */
static __always_inline int bench_source(struct xdp_md *ctx, struct bench_addr *src)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);

		if ((void *)(iph + 1) > data_end)
			return -1;
		src->bytes[10] = 0xff;
		src->bytes[11] = 0xff;
		__builtin_memcpy(&src->bytes[12], &iph->saddr, 4);
		return 0;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = (void *)(eth + 1);

		if ((void *)(ip6h + 1) > data_end)
			return -1;
		__builtin_memcpy(src->bytes, &ip6h->saddr, 16);
		return 0;
	}
	return -1;
}

static __always_inline void bench_count(struct bench_slot *c, __u64 len)
{
	c->packets++;
	c->bytes += len;
	c->local_packets++;
}

SEC("xdp")
int xdp_lru_count(struct xdp_md *ctx)
{
	__u64 len = ctx->data_end - ctx->data;
	struct bench_addr src = {};
	struct bench_slot *c;

	if (bench_source(ctx, &src))
		return XDP_PASS;
	c = bpf_map_lookup_elem(&bench_lru_counts, &src);
	if (!c) {
		struct bench_slot zero = {};

		bpf_map_update_elem(&bench_lru_counts, &src, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&bench_lru_counts, &src);
		if (!c)
			return XDP_PASS;
	}
	bench_count(c, len);
	return XDP_PASS;
}

SEC("xdp")
int xdp_slot_count(struct xdp_md *ctx)
{
	__u64 len = ctx->data_end - ctx->data;
	struct bench_addr src = {}, *addr;
	struct bench_slot *c;
	__u32 zero = 0, slot, idx, *found, *next;

	if (bench_source(ctx, &src))
		return XDP_PASS;
	found = bpf_map_lookup_elem(&bench_slot_of, &src);
	if (found) {
		slot = *found;
	} else {
		next = bpf_map_lookup_elem(&bench_slot_next, &zero);
		if (!next)
			return XDP_PASS;
		slot = __sync_fetch_and_add(next, 1);
		if (slot >= slot_cap)
			return XDP_PASS; /* full: uncounted */
		addr = bpf_map_lookup_elem(&bench_slot_addrs, &slot);
		if (!addr)
			return XDP_PASS;
		*addr = src;
		if (bpf_map_update_elem(&bench_slot_of, &src, &slot, BPF_NOEXIST)) {
			/* Another CPU inserted the source first: its slot wins, this one is lost. */
			found = bpf_map_lookup_elem(&bench_slot_of, &src);
			if (!found)
				return XDP_PASS;
			slot = *found;
		}
	}
	idx = bpf_get_smp_processor_id() * slot_cap + slot;
	c = bpf_map_lookup_elem(&bench_slot_counts, &idx);
	if (!c)
		return XDP_PASS;
	bench_count(c, len);
	return XDP_PASS;
}
