package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "manifests.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const validManifests = `
# A monitor and two blocks, one of them expired.
apiVersion: lanmonitor.io/v1alpha1
kind: LanMonitor
metadata:
  name: lab
spec:
  nodeSelector: {matchLabels: {ignored: "in standalone mode"}}
  reportInterval: 2s
  internalCIDRs: ["198.18.0.0/15"]
---
apiVersion: lanmonitor.io/v1alpha1
kind: IPBlock
metadata:
  name: scanners
spec:
  cidrs: ["198.18.0.66", "2001:db8:bad::/48"]
  direction: Both
  mode: Audit
---
apiVersion: lanmonitor.io/v1alpha1
kind: IPBlock
metadata:
  name: old
spec:
  cidrs: ["198.18.9.0/24"]
  expiresAt: "2026-01-01T00:00:00Z"
`

func TestStandaloneManifests(t *testing.T) {
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	mf, err := LoadManifests(v, []string{writeFile(t, validManifests)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	cfg, next, err := StandaloneConfig("lan0", mf, now, 4096)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Interface: "lan0", XDPMode: XDPModeAuto, Promiscuous: true, InternalCIDRs: pfx("198.18.0.0/15"),
		TopN: 10, ReportInterval: 2 * time.Second, MaxTrackedSources: 65536, ProtectedCIDRs: pfx(),
		Blocks: []Block{{Name: "scanners", RuleID: assignRuleIDs([]string{"scanners"}, nil, 4096)["scanners"], Generation: 0,
			Direction: DirectionBoth, Mode: BlockModeAudit, CIDRs: pfx("198.18.0.66", "2001:db8:bad::/48")}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("config\n got %+v\nwant %+v", cfg, want)
	}
	if !next.IsZero() {
		t.Errorf("next expiry %v, want none (the only expiring block has expired)", next)
	}
	// Before the expiry, the old block applies and its expiry is next.
	cfg, next, err = StandaloneConfig("lan0", mf, time.Date(2025, 12, 31, 0, 0, 0, 0, time.UTC), 4096)
	if err != nil || len(cfg.Blocks) != 2 || !next.Equal(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("before expiry: %d blocks, next %v, err %v; want 2 blocks, next 2026-01-01", len(cfg.Blocks), next, err)
	}
	if _, _, err := StandaloneConfig("lan0", mf, now, 0); err == nil || err.Error() != "1 IPBlocks: more than the 0 rules an interface holds (--max-rules)" {
		t.Errorf("more blocks than rules: error %v", err)
	}
	if _, _, err := StandaloneConfig("eth9", &Manifests{Monitors: append(mf.Monitors, mf.Monitors[0])}, now, 4096); err == nil ||
		!strings.Contains(err.Error(), "standalone mode takes at most one") {
		t.Errorf("two monitors: error %v", err)
	}
}

// TestStandaloneManifestErrors: every bad manifest is refused with the API
// server's message naming the field, and the file and object it is in.
func TestStandaloneManifestErrors(t *testing.T) {
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	block := func(spec string) string {
		return "apiVersion: lanmonitor.io/v1alpha1\nkind: IPBlock\nmetadata: {name: bad}\nspec:\n" + spec
	}
	monitor := func(spec string) string {
		return "apiVersion: lanmonitor.io/v1alpha1\nkind: LanMonitor\nmetadata: {name: bad}\nspec:\n" + spec
	}
	for _, c := range []struct {
		name, body string
		want       []string
	}{
		{"cidr out of range", block(`  cidrs: ["300.1.2.3"]`), []string{`document 1 (IPBlock "bad")`, "spec.cidrs[0]", "must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form"}},
		{"IPv4-mapped address", block(`  cidrs: ["::ffff:198.51.100.66"]`), []string{"spec.cidrs[0]", `"::ffff:198.51.100.66"`, "must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form"}},
		{"IPv4-mapped prefix", block(`  cidrs: ["::ffff:0:0/96"]`), []string{"spec.cidrs[0]", "must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form"}},
		{"IPv4-mapped protected address", monitor(`  protectedCIDRs: ["::FFFF:198.18.0.1"]`), []string{"spec.protectedCIDRs[0]", "must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form"}},
		{"prefix too long", block(`  cidrs: ["10.0.0.0/33"]`), []string{"spec.cidrs[0]", "must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form"}},
		{"empty cidr list", block(`  cidrs: []`), []string{"spec.cidrs", "should have at least 1 items"}},
		{"unknown direction", block("  cidrs: [198.18.0.1]\n  direction: Sideways"), []string{"spec.direction", `Unsupported value: "Sideways"`}},
		{"unknown field", block("  cidrs: [198.18.0.1]\n  cidr: 198.18.0.2"), []string{"spec.cidr", "unknown field"}},
		{"topN too large", monitor("  topN: 101"), []string{"spec.topN", "should be less than or equal to 100"}},
		{"interval too short", monitor("  reportInterval: 500ms"), []string{"spec.reportInterval", "must be at least 1s"}},
		{"unknown xdpMode", monitor("  xdpMode: Turbo"), []string{"spec.xdpMode", `Unsupported value: "Turbo"`}},
		{"other kind", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", []string{"kind", `Unsupported value: "v1 ConfigMap"`}},
		{"no name", "apiVersion: lanmonitor.io/v1alpha1\nkind: IPBlock\nspec: {cidrs: [198.18.0.1]}\n", []string{"metadata.name", "Required value"}},
		{"not yaml", "cidrs: [", []string{"document 1"}},
		{"empty file", "# nothing yet\n", []string{"no LanMonitor or IPBlock in the file"}},
		{"bad name", "apiVersion: lanmonitor.io/v1alpha1\nkind: IPBlock\nmetadata: {name: Bad_Name}\nspec: {cidrs: [198.18.0.1]}\n", []string{"metadata.name", "a lowercase RFC 1123 subdomain"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := writeFile(t, c.body)
			_, err := LoadManifests(v, []string{file})
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range append(c.want, file) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
