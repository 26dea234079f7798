package bpf

// The XDP program is compiled by clang into lanmonitor_bpfel.o and wrapped by
// bpf2go into lanmonitor_bpfel.go; both are committed, so building lanmonitor
// needs no C toolchain. `make generate-bpf` (clang-14, libbpf-dev) rebuilds
// them and `make verify` checks they match this source.
//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags "${BPF_CFLAGS} -mcpu=v3" -target bpfel -type lm_addr -type lm_talker -type lm_rule_key -type lm_rule -type lm_rule_counters -type lm_config -type lm_prefix_lengths -type lm_stats lanmonitor lanmonitor.c
