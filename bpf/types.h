/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * types.h: structs shared between the XDP program and Go (bpf2go generates
 * the Go twins from BTF with -type). Every struct is laid out with explicit
 * padding so that C and Go agree byte for byte.
 *
 * Addresses are 16 bytes in network byte order. IPv4 addresses are stored
 * IPv4-mapped (::ffff:a.b.c.d, RFC 4291 section 2.5.5.2), so one key type
 * covers both families.
 */
#ifndef LANMONITOR_TYPES_H
#define LANMONITOR_TYPES_H

#include <linux/types.h>

/*
 * struct lm_addr: an IPv6 or IPv4-mapped address, network byte order.
 * Aligned to 8 so the program loads it as two 64-bit words.
 */
struct lm_addr {
	__u8 bytes[16];
} __attribute__((aligned(8)));

/* struct lm_talker: per-source counters (one copy per CPU, see lm_talker_counts). */
struct lm_talker {
	__u64 packets;         /* frames from this source */
	__u64 bytes;           /* sum of frame lengths (data_end - data) */
	__u64 local_packets;   /* frames addressed to this interface (own MAC, broadcast, multicast) */
	__u64 snooped_packets; /* frames addressed to another host, seen in promiscuous mode */
};

/*
 * Which rule table an entry of lm_rules belongs to. Every table exists in two
 * generations (see struct lm_config.gen): the key's table field is
 * table + LM_TABLE_COUNT * generation.
 */
enum lm_table {
	LM_TABLE_SOURCE = 0,      /* blocklist matched against the source address */
	LM_TABLE_DESTINATION = 1, /* blocklist matched against the destination address */
	LM_TABLE_PROTECTED = 2,   /* protected prefixes (lockout guard), never dropped */
	LM_TABLE_COUNT = 3,
};

/* Rule-table generations: one in force, one being written by Go. */
#define LM_GENERATIONS 2

/* What a matching blocklist entry does. */
enum lm_mode {
	LM_MODE_ENFORCE = 0, /* drop frames addressed to this interface */
	LM_MODE_AUDIT = 1,   /* count would-be drops, pass the frame */
};

/*
 * struct lm_rule_key: one prefix of one table. prefix_len counts bits of the
 * 16-byte address, so an IPv4 /24 is stored with prefix_len 96+24 = 120.
 * addr is masked to prefix_len (host bits zero).
 */
struct lm_rule_key {
	struct lm_addr addr;
	__u8 prefix_len; /* 0..128 */
	__u8 table;      /* enum lm_table + LM_TABLE_COUNT * generation */
	__u8 pad[2];
};

/* struct lm_rule: the rule a prefix belongs to. */
struct lm_rule {
	__u32 rule_id; /* index into lm_rule_counters; 0 for protected entries */
	__u8 mode;     /* enum lm_mode */
	__u8 pad[3];
};

/* struct lm_rule_counters: per-rule counters (one copy per CPU). */
struct lm_rule_counters {
	__u64 matched;  /* frames whose address matched the rule */
	__u64 dropped;  /* of those, dropped (Enforce, frame addressed to us) */
	__u64 exempted; /* of those, passed because the address is protected */
};

/*
 * struct lm_prefix_lengths: which prefix lengths a table holds, so the
 * lookup probes only those. Bit n of v4 is set when an IPv4 /n is present;
 * bit (n % 64) of v6[n / 64] when an IPv6 /n is present.
 */
struct lm_prefix_lengths {
	__u64 v4;
	__u64 v6[3];
};

/*
 * LM_FLAG_PROMISCUOUS: the interface is meant to be promiscuous. Without it,
 * frames addressed to other hosts are not counted (only filtered_snooped):
 * a NIC's MAC filter would have dropped them, but devices without one (veth,
 * some virtual NICs) deliver them to XDP anyway.
 */
#define LM_FLAG_PROMISCUOUS (1 << 0)

/*
 * struct lm_config: runtime knobs, the single entry of lm_settings.
 *
 * The rule tables are double-buffered: gen names the generation in force.
 * The program reads gen once per frame and makes every lookup of that frame
 * in that generation, so a frame sees one whole configuration, old or new,
 * never a mix. Go writes a change into the other generation, flips gen,
 * waits for an RCU grace period (every run that read the old gen has ended),
 * then brings the old generation up to date.
 */
struct lm_config {
	__u8 if_mac[6]; /* the interface's own MAC: frames to it are local */
	__u8 pad[2];
	__u32 sample_rate; /* 1-in-N flow sampling; 0 = off */
	__u32 flags;       /* LM_FLAG_* */
	__u32 gen;         /* rule-table generation in force: 0 or 1 */
	__u32 pad2;
	struct lm_prefix_lengths lengths[LM_GENERATIONS][LM_TABLE_COUNT];
};

/* struct lm_stats: global counters (one copy per CPU). */
struct lm_stats {
	__u64 packets;    /* every frame the hook saw */
	__u64 bytes;      /* sum of frame lengths (data_end - data) */
	__u64 passed;     /* XDP_PASS verdicts */
	__u64 dropped;    /* XDP_DROP verdicts */
	__u64 malformed;  /* frames that claim IP but do not parse; passed */
	__u64 non_ip;     /* frames that are not IPv4/IPv6; passed */
	__u64 ipv4;       /* well-formed IPv4 packets */
	__u64 ipv6;       /* well-formed IPv6 packets */
	__u64 fragments;  /* IP fragments (first, middle and last) */
	__u64 vlan_tagged; /* frames with at least one 802.1Q/802.1ad tag */
	__u64 local;      /* frames addressed to this interface */
	__u64 snooped;    /* frames addressed to another host */
	__u64 exempted;   /* blocklist matches passed because the address is protected */
	__u64 talker_inserts;       /* new sources given a slot of the talker table */
	__u64 talker_insert_errors; /* inserts that failed other than by losing a race */
	__u64 samples_lost;         /* flow samples dropped because the ring buffer was full */
	__u64 filtered_snooped;     /* frames for other hosts ignored (not promiscuous); not in packets */
	__u64 v4_mapped;            /* IPv6 packets with an IPv4-mapped source or destination */
	__u64 talkers_full;         /* frames of new sources not tracked: no free slot */
};

/* Flow sample flags. */
#define LM_SAMPLE_LOCAL (1 << 0)
#define LM_SAMPLE_FRAGMENT (1 << 1)
#define LM_SAMPLE_IPV6 (1 << 2)

/* struct lm_flow_sample: one sampled packet, sent through lm_samples. */
struct lm_flow_sample {
	struct lm_addr src;
	struct lm_addr dst;
	__u16 src_port; /* host byte order; ICMP: type */
	__u16 dst_port; /* host byte order; ICMP: code */
	__u8 protocol;  /* IP protocol number after the IPv6 extension headers */
	__u8 flags;     /* LM_SAMPLE_* */
	__u8 verdict;   /* XDP_PASS or XDP_DROP */
	__u8 pad;
	__u32 rule_id;  /* the rule that matched, 0 if none */
	__u32 frame_len; /* bytes */
	__u32 ifindex;  /* ingress ifindex */
	__u32 pad2;
};

#endif /* LANMONITOR_TYPES_H */
