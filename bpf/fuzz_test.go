package bpf_test

import (
	"net/netip"
	"testing"

	"github.com/lanmonitor/lanmonitor/bpf"
	"github.com/lanmonitor/lanmonitor/internal/frames"
)

// fuzzBlocked are the blocklist of FuzzFrames; the fuzzer's frames are
// dropped only if they contain an address inside one of them.
var fuzzBlocked = []string{"198.18.0.66/32", "198.19.66.0/24", "2001:db8:bad::/48", "2001:db8::66/128"}

// FuzzFrames sends arbitrary frames through the program. Whatever the bytes:
// the verdict is XDP_PASS or XDP_DROP (never XDP_ABORTED); XDP_DROP only when
// the frame holds an address of the blocklist somewhere; every frame is
// counted once; and a malformed or non-IP frame never creates a talker.
// `go test` runs the seeds (the table's frames); `make fuzz` explores.
func FuzzFrames(f *testing.F) {
	for _, c := range cases() {
		frame := frames.MustBuild(c.spec)
		if c.edit != nil {
			frame = c.edit(frame)
		}
		f.Add(frame)
	}
	d := loadForTest(f, bpf.Config{MaxTrackedSources: 1 << 16})
	var blocked []netip.Prefix
	src := map[netip.Prefix]bpf.Rule{}
	dst := map[netip.Prefix]bpf.Rule{}
	for i, p := range fuzzBlocked {
		pfx := netip.MustParsePrefix(p)
		blocked = append(blocked, pfx)
		src[pfx] = bpf.Rule{ID: uint32(i + 1)}
		dst[pfx] = bpf.Rule{ID: uint32(i + 1)}
	}
	if _, _, err := d.SyncPrefixes(bpf.TableSource, src); err != nil {
		f.Fatal(err)
	}
	if _, _, err := d.SyncPrefixes(bpf.TableDestination, dst); err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, frame []byte) {
		// BPF_PROG_TEST_RUN needs an Ethernet header, and puts bytes past
		// 4096 - 256 (headroom) - 320 (skb_shared_info) = 3520 into
		// fragments that a non-frags program does not see.
		if len(frame) < 14 || len(frame) > 3520 {
			t.Skip("frame length outside 14..3520 bytes")
		}
		before := stats(t, d)
		v := run(t, d, frame)
		after := stats(t, d)
		delta := statsDelta(after, before)
		switch v {
		case xdpPass:
		case xdpDrop:
			if !containsBlocked(frame, blocked) {
				t.Fatalf("dropped a frame holding no blocked address: %x", frame)
			}
		default:
			t.Fatalf("verdict %d, want pass or drop", v)
		}
		if delta.Packets != 1 || delta.Passed+delta.Dropped != 1 || delta.Bytes != uint64(len(frame)) {
			t.Fatalf("frame not counted exactly once: %+v", delta)
		}
		if (delta.Malformed == 1 || delta.NonIP == 1) && (delta.TalkerInserts != 0 || delta.IPv4+delta.IPv6 != 0 || v != xdpPass) {
			t.Fatalf("malformed or non-IP frame created a talker or was dropped: %+v verdict %d", delta, v)
		}
	})
}

// containsBlocked reports whether any 4-byte window of b is an IPv4 address,
// or any 16-byte window an IPv6 address, inside one of the prefixes.
func containsBlocked(b []byte, prefixes []netip.Prefix) bool {
	for i := range b {
		if i+4 <= len(b) {
			a := netip.AddrFrom4([4]byte(b[i : i+4]))
			for _, p := range prefixes {
				if p.Contains(a) {
					return true
				}
			}
		}
		if i+16 <= len(b) {
			a := netip.AddrFrom16([16]byte(b[i : i+16]))
			for _, p := range prefixes {
				if p.Contains(a) {
					return true
				}
			}
		}
	}
	return false
}
