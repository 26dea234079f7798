package bpf

import "github.com/cilium/ebpf"

// TalkersMap is d's lm_talkers, for benchmarks that measure its kernel
// memory.
func TalkersMap(d *Datapath) *ebpf.Map { return d.objs.LmTalkers }
