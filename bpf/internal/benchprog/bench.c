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
