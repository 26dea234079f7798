package bpf

import (
	"math/bits"
	"reflect"
	"testing"
)

// TestStatsAddEveryField: Stats.add carries every counter of the C struct
// lm_stats (bpf2go's lanmonitorLmStats) into exactly one field of Stats,
// and Stats has no field that no counter fills: counter i is set to 1<<i,
// and every field of Stats must hold exactly one of those bits, each bit
// once.
func TestStatsAddEveryField(t *testing.T) {
	var raw lanmonitorLmStats
	rv := reflect.ValueOf(&raw).Elem()
	n := 0
	for i := range rv.NumField() {
		if f := rv.Type().Field(i); f.Name == "_" {
			continue
		} else if f.Type.Kind() != reflect.Uint64 {
			t.Fatalf("lm_stats field %s is %s, want __u64", f.Name, f.Type)
		}
		rv.Field(i).SetUint(1 << n)
		n++
	}
	var s Stats
	s.add(&raw)
	sv := reflect.ValueOf(s)
	var seen uint64
	for i := range sv.NumField() {
		v := sv.Field(i).Uint()
		if bits.OnesCount64(v) != 1 || seen&v != 0 {
			t.Errorf("Stats.%s = %#x: want one counter of lm_stats, not yet used", sv.Type().Field(i).Name, v)
		}
		seen |= v
	}
	if want := uint64(1)<<n - 1; seen != want || sv.NumField() != n {
		t.Errorf("Stats has %d fields carrying %#x, lm_stats has %d counters (%#x)", sv.NumField(), seen, n, want)
	}
}
