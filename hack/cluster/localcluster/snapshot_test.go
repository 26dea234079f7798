package localcluster

import (
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"testing"
)

// nftMissing is the error `nft list ruleset` gives on a machine without nft.
func nftMissing() (string, error) {
	return "", &exec.Error{Name: "nft", Err: exec.ErrNotFound}
}

func nftPrints(out string) func() (string, error) {
	return func() (string, error) { return out, nil }
}

func kernelHas(tables ...string) func() ([]string, error) {
	return func() ([]string, error) { return tables, nil }
}

func snapshotReading(list func() (string, error), tables func() ([]string, error)) *Snapshot {
	s := &Snapshot{}
	s.NFT, s.NFTError = readRuleset(list, tables)
	return s
}

const filterRuleset = "table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t}\n}\n"

// TestDiffNFTHostStateNotTool: a fresh machine records the host before the
// cluster's set-up installs nftables, and after it with nft. Both readings
// say "no rules" and must compare equal; a real change of the ruleset, or
// rules that could not be listed before, must not.
func TestDiffNFTHostStateNotTool(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after *Snapshot
		want          []string
	}{
		{
			name:   "no nft before, empty ruleset after",
			before: snapshotReading(nftMissing, kernelHas()),
			after:  snapshotReading(nftPrints(""), nil),
		},
		{
			name:   "empty ruleset before, nft removed after",
			before: snapshotReading(nftPrints(""), nil),
			after:  snapshotReading(nftMissing, kernelHas()),
		},
		{
			name:   "same ruleset",
			before: snapshotReading(nftPrints(filterRuleset), nil),
			after:  snapshotReading(nftPrints(filterRuleset), nil),
		},
		{
			name:   "a table left behind",
			before: snapshotReading(nftMissing, kernelHas()),
			after:  snapshotReading(nftPrints(filterRuleset), nil),
			want:   []string{"ruleset before:\n\nafter:\n" + filterRuleset},
		},
		{
			name:   "tables before that nft was missing to list",
			before: snapshotReading(nftMissing, kernelHas("inet filter", "ip nat")),
			after:  snapshotReading(nftPrints(filterRuleset), nil),
			want: []string{"ruleset before:\nnft not installed to list the rules of the kernel's nf_tables tables inet filter, ip nat\n" +
				"after:\n" + filterRuleset},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Diff(tc.before, tc.after)["nft"]; !slices.Equal(got, tc.want) {
				t.Errorf("Diff nft = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestReadRuleset: each way of reading the ruleset, with the exact values
// recorded.
func TestReadRuleset(t *testing.T) {
	failed := errors.New("netlink receive: operation not permitted")
	for _, tc := range []struct {
		name            string
		list            func() (string, error)
		tables          func() ([]string, error)
		wantNFT, wantEr string
	}{
		{"nft prints the ruleset", nftPrints(filterRuleset), nil, filterRuleset, ""},
		{"nft prints the empty ruleset", nftPrints(""), nil, "", ""},
		{"no nft, no tables", nftMissing, kernelHas(), "", ""},
		{"no nft, tables", nftMissing, kernelHas("inet filter"), "",
			"nft not installed to list the rules of the kernel's nf_tables tables inet filter"},
		{"no nft, netlink fails", nftMissing, func() ([]string, error) { return nil, failed }, "",
			"nft not installed, and listing the kernel's nf_tables tables failed: " + failed.Error()},
		{"nft fails", func() (string, error) { return "", fmt.Errorf("exit status 1") }, nil, "",
			"nft list ruleset: exit status 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nft, nftErr := readRuleset(tc.list, tc.tables)
			if nft != tc.wantNFT || nftErr != tc.wantEr {
				t.Errorf("readRuleset = %q, %q; want %q, %q", nft, nftErr, tc.wantNFT, tc.wantEr)
			}
		})
	}
}
