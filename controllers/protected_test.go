package controllers

import (
	"slices"
	"strconv"
	"testing"

	"github.com/lanmonitor/lanmonitor/internal/prefixes"
)

func TestExemptions(t *testing.T) {
	for _, tt := range []struct {
		name               string
		blocked, protected []string
		want               []string
	}{
		{"protected host inside blocked CIDR", []string{"198.18.0.0/15"}, []string{"198.18.0.1"}, []string{"198.18.0.1"}},
		{"blocked host inside protected CIDR", []string{"198.18.1.7"}, []string{"198.18.1.0/24"}, []string{"198.18.1.7"}},
		{"protected CIDR inside blocked CIDR", []string{"198.18.0.0/16"}, []string{"198.18.1.0/24"}, []string{"198.18.1.0/24"}},
		{"same prefix", []string{"198.18.1.0/24"}, []string{"198.18.1.0/24"}, []string{"198.18.1.0/24"}},
		{"disjoint", []string{"198.18.0.0/24"}, []string{"198.18.1.1", "2001:db8::1"}, nil},
		{"host bits in a blocked CIDR", []string{"198.18.0.77/24"}, []string{"198.18.0.1"}, []string{"198.18.0.1"}},
		{"IPv6", []string{"2001:db8::/32"}, []string{"2001:db8::1", "2001:db8:1::/48"}, []string{"2001:db8::1", "2001:db8:1::/48"}},
		{"IPv4-mapped IPv6 protected address", []string{"198.18.0.0/15"}, []string{"::ffff:198.18.0.9"}, []string{"198.18.0.9"}},
		{"families do not mix", []string{"::/0"}, []string{"198.18.0.1"}, nil},
		{"duplicates and order", []string{"198.18.0.0/15", "2001:db8::/32", "198.18.0.0/16"},
			[]string{"2001:db8::5", "198.19.0.1", "198.18.0.1", "198.18.0.1"}, []string{"198.18.0.1", "198.19.0.1", "2001:db8::5"}},
		{"unparsable entries are ignored", []string{"abc", "198.18.0.0/15"}, []string{"", "198.18.0.1"}, []string{"198.18.0.1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := prefixes.FormatSorted(exemptions(tt.blocked, tt.protected), 100)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFormatPrefixesBound(t *testing.T) {
	var protected []string
	for i := range 300 {
		protected = append(protected, "198.18.1."+strconv.Itoa(i%256), "198.18.2."+strconv.Itoa(i%256))
	}
	got := prefixes.FormatSorted(exemptions([]string{"198.18.0.0/15"}, protected), 100)
	if len(got) != 100 || got[0] != "198.18.1.0" || got[99] != "198.18.1.99" {
		t.Errorf("got %d entries %v ... %v", len(got), got[0], got[len(got)-1])
	}
}
