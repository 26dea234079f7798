package agent

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSortRankKeys: the radix sort gives the comparison sort's order, for
// keys that tie on rate, on bytes, on both, and on the address's high word,
// at sizes below and above the switch between the two.
func TestSortRankKeys(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 511, 512, 5000, 65536} {
		for _, spread := range []uint64{1, 3, 1 << 20, 1 << 63} {
			keys := make([]rankKey, n)
			for i := range keys {
				keys[i] = rankKey{bps: r.Uint64N(spread), bytes: r.Uint64N(spread) << 8, hi: r.Uint64N(spread), lo: uint64(i), i: i}
				if i%7 == 0 {
					keys[i].bps = ^uint64(0) - keys[i].bps // the top of the range
				}
			}
			r.Shuffle(n, func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
			want := slices.Clone(keys)
			slices.SortFunc(want, compareRankKeys)
			sortRankKeys(keys)
			if !slices.Equal(keys, want) {
				t.Fatalf("n=%d spread=%d: radix order differs from the comparison order", n, spread)
			}
		}
	}
}
