package prefixes

import (
	"net/netip"
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]string{
		"198.18.0.7":            "198.18.0.7/32",
		"198.18.0.7/24":         "198.18.0.0/24",
		"2001:db8::1":           "2001:db8::1/128",
		"::ffff:198.18.0.7":     "198.18.0.7/32",
		"::ffff:198.18.0.0/120": "198.18.0.0/24",
		"::ffff:0:0/96":         "0.0.0.0/0",
	} {
		p, ok := Parse(in)
		if !ok || p.String() != want {
			t.Errorf("Parse(%q) = %v, %v; want %s", in, p, ok, want)
		}
	}
	for _, bad := range []string{"", "198.18.0.0/33", "lan0", "198.18.0"} {
		if p, ok := Parse(bad); ok {
			t.Errorf("Parse(%q) = %v, want not ok", bad, p)
		}
	}
}

func TestExemptions(t *testing.T) {
	parse := func(ss ...string) []netip.Prefix {
		out := make([]netip.Prefix, len(ss))
		for i, s := range ss {
			out[i], _ = Parse(s)
		}
		return out
	}
	blocked := parse("198.18.0.0/24", "198.19.7.7", "2001:db8:ff::/48", "198.18.0.0/24")
	protected := parse("198.18.0.1", "198.18.0.2", "198.19.0.0/16", "2001:db8::/32", "203.0.113.9")
	got := FormatSorted(Exemptions(blocked, protected), 100)
	want := []string{"198.18.0.1", "198.18.0.2", "198.19.7.7", "2001:db8:ff::/48"}
	if !slices.Equal(got, want) {
		t.Errorf("exemptions %q, want %q", got, want)
	}
	if got := FormatSorted(Exemptions(blocked, protected), 2); !slices.Equal(got, want[:2]) {
		t.Errorf("first 2: %q, want %q", got, want[:2])
	}
	if got := FormatSorted(nil, 5); got != nil {
		t.Errorf("no prefixes: %q, want nil", got)
	}
}
