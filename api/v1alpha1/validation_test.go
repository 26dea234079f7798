package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
)

// object builds an unstructured lanmonitor.io object, so that the API server
// sees exactly the fields a user's YAML would carry (a Go struct would drop
// zero values such as topN: 0).
func object(kind string, spec map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": lanmonitorv1alpha1.GroupVersion.String(),
		"kind":       kind,
		"metadata":   map[string]any{"name": "bad"},
		"spec":       spec,
	}}
	return u
}

func block(cidrs []any, extra map[string]any) *unstructured.Unstructured {
	spec := map[string]any{"cidrs": cidrs}
	for k, v := range extra {
		spec[k] = v
	}
	return object("IPBlock", spec)
}

const notChecked = `<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation`

// TestValidation sends bad objects to the real API server and checks the
// exact error of each: it must name the offending field.
func TestValidation(t *testing.T) {
	many := make([]any, 1025)
	for i := range many {
		many[i] = fmt.Sprintf("198.18.%d.%d", i/256, i%256)
	}
	tests := []struct {
		name string
		obj  *unstructured.Unstructured
		want string
	}{{
		name: "IPv4-mapped IPv6 address",
		obj:  block([]any{"::ffff:198.51.100.66"}, nil),
		want: `IPBlock.lanmonitor.io "bad" is invalid: spec.cidrs[0]: Invalid value: "::ffff:198.51.100.66": must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form`,
	}, {
		name: "IPv4-mapped IPv6 prefix",
		obj:  block([]any{"::ffff:0:0/96"}, nil),
		want: `IPBlock.lanmonitor.io "bad" is invalid: spec.cidrs[0]: Invalid value: "::ffff:0:0/96": must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form`,
	}, {
		name: "IPv4-mapped protected address",
		obj:  object("LanMonitor", map[string]any{"protectedCIDRs": []any{"::ffff:198.18.0.1"}}),
		want: `LanMonitor.lanmonitor.io "bad" is invalid: spec.protectedCIDRs[0]: Invalid value: "::ffff:198.18.0.1": must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form`,
	}, {
		name: "CIDR prefix too long",
		obj:  block([]any{"198.18.0.0/16", "10.0.0.0/33"}, nil),
		want: `IPBlock.lanmonitor.io "bad" is invalid: spec.cidrs[1]: Invalid value: "10.0.0.0/33": must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form`,
	}, {
		name: "IPv4 octet out of range",
		obj:  block([]any{"300.1.2.3"}, nil),
		want: `IPBlock.lanmonitor.io "bad" is invalid: spec.cidrs[0]: Invalid value: "300.1.2.3": must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form`,
	}, {
		name: "not an address",
		obj:  block([]any{"abc"}, nil),
		want: `IPBlock.lanmonitor.io "bad" is invalid: spec.cidrs[0]: Invalid value: "abc": must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form`,
	}, {
		name: "empty string",
		obj:  block([]any{""}, nil),
		want: `IPBlock.lanmonitor.io "bad" is invalid: spec.cidrs[0]: Invalid value: "": must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form`,
	}, {
		name: "IPv6 prefix too long",
		obj:  block([]any{"2001:db8::/129"}, nil),
		want: `IPBlock.lanmonitor.io "bad" is invalid: spec.cidrs[0]: Invalid value: "2001:db8::/129": must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form`,
	}, {
		name: "host bits set after the prefix length",
		obj:  block([]any{"198.18.0.1/16"}, nil),
		want: `IPBlock.lanmonitor.io "bad" is invalid: spec.cidrs[0]: Invalid value: "198.18.0.1/16": must have no bits set after the prefix length (10.0.0.0/8, not 10.0.0.1/8): blocking a whole network by a typo is not what was meant`,
	}, {
		name: "empty CIDR list",
		obj:  block([]any{}, nil),
		want: `IPBlock.lanmonitor.io "bad" is invalid: spec.cidrs: Invalid value: 0: spec.cidrs in body should have at least 1 items`,
	}, {
		name: "missing CIDR list",
		obj:  object("IPBlock", map[string]any{"mode": "Audit"}),
		want: `IPBlock.lanmonitor.io "bad" is invalid: [spec.cidrs: Required value, ` + notChecked + `]`,
	}, {
		name: "1025 CIDRs",
		obj:  block(many, nil),
		want: `IPBlock.lanmonitor.io "bad" is invalid: [spec.cidrs: Too many: 1025: must have at most 1024 items, ` + notChecked + `]`,
	}, {
		name: "unknown direction",
		obj:  block([]any{"198.18.0.1"}, map[string]any{"direction": "Inbound"}),
		want: `IPBlock.lanmonitor.io "bad" is invalid: [spec.direction: Unsupported value: "Inbound": supported values: "Source", "Destination", "Both", ` + notChecked + `]`,
	}, {
		name: "unknown mode",
		obj:  block([]any{"198.18.0.1"}, map[string]any{"mode": "Drop"}),
		want: `IPBlock.lanmonitor.io "bad" is invalid: [spec.mode: Unsupported value: "Drop": supported values: "Enforce", "Audit", ` + notChecked + `]`,
	}, {
		name: "reason too long",
		obj:  block([]any{"198.18.0.1"}, map[string]any{"reason": strings.Repeat("x", 257)}),
		want: `IPBlock.lanmonitor.io "bad" is invalid: [spec.reason: Too long: may not be more than 256 bytes, ` + notChecked + `]`,
	}, {
		name: "topN 0",
		obj:  object("LanMonitor", map[string]any{"topN": int64(0)}),
		want: `LanMonitor.lanmonitor.io "bad" is invalid: spec.topN: Invalid value: 0: spec.topN in body should be greater than or equal to 1`,
	}, {
		name: "topN 101",
		obj:  object("LanMonitor", map[string]any{"topN": int64(101)}),
		want: `LanMonitor.lanmonitor.io "bad" is invalid: spec.topN: Invalid value: 101: spec.topN in body should be less than or equal to 100`,
	}, {
		name: "report interval under 1s",
		obj:  object("LanMonitor", map[string]any{"reportInterval": "999ms"}),
		want: `LanMonitor.lanmonitor.io "bad" is invalid: spec.reportInterval: Invalid value: "999ms": must be at least 1s`,
	}, {
		name: "report interval not a duration",
		obj:  object("LanMonitor", map[string]any{"reportInterval": "soon"}),
		want: `LanMonitor.lanmonitor.io "bad" is invalid: [spec.reportInterval: Invalid value: "soon": spec.reportInterval in body must be of type duration: "soon", ` + notChecked + `]`,
	}, {
		name: "unknown xdpMode",
		obj:  object("LanMonitor", map[string]any{"xdpMode": "Offload"}),
		want: `LanMonitor.lanmonitor.io "bad" is invalid: [spec.xdpMode: Unsupported value: "Offload": supported values: "Auto", "Native", "Generic", ` + notChecked + `]`,
	}, {
		name: "invalid internal CIDR",
		obj:  object("LanMonitor", map[string]any{"internalCIDRs": []any{"198.18.0.0/15", "198.18.0.0/40"}}),
		want: `LanMonitor.lanmonitor.io "bad" is invalid: spec.internalCIDRs[1]: Invalid value: "198.18.0.0/40": must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form`,
	}, {
		name: "invalid protected CIDR",
		obj:  object("LanMonitor", map[string]any{"protectedCIDRs": []any{"2001:db8::g"}}),
		want: `LanMonitor.lanmonitor.io "bad" is invalid: spec.protectedCIDRs[0]: Invalid value: "2001:db8::g": must be an IPv4 or IPv6 address or CIDR; IPv4-mapped IPv6 (::ffff:a.b.c.d) is refused: write the IPv4 form`,
	}, {
		name: "interface name too long",
		obj:  object("LanMonitor", map[string]any{"interface": "enp0s31f6-longer"}),
		want: `LanMonitor.lanmonitor.io "bad" is invalid: [spec.interface: Too long: may not be more than 15 bytes, ` + notChecked + `]`,
	}, {
		name: "interface name with a slash",
		obj:  object("LanMonitor", map[string]any{"interface": "eth0/1"}),
		want: `LanMonitor.lanmonitor.io "bad" is invalid: spec.interface: Invalid value: "eth0/1": spec.interface in body should match '^[A-Za-z0-9_][A-Za-z0-9_.-]*$'`,
	}, {
		name: "maxTrackedSources too small",
		obj:  object("LanMonitor", map[string]any{"maxTrackedSources": int64(8)}),
		want: `LanMonitor.lanmonitor.io "bad" is invalid: spec.maxTrackedSources: Invalid value: 8: spec.maxTrackedSources in body should be greater than or equal to 16`,
	}, {
		name: "negative flowSampling",
		obj:  object("LanMonitor", map[string]any{"flowSampling": int64(-1)}),
		want: `LanMonitor.lanmonitor.io "bad" is invalid: spec.flowSampling: Invalid value: -1: spec.flowSampling in body should be greater than or equal to 0`,
	}}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := env.Client.Create(ctx, tt.obj)
			if err == nil {
				_ = env.Client.Delete(ctx, tt.obj)
				t.Fatalf("created; want error %q", tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

// TestDefaults checks that the API server fills in the defaults that the
// controller and agent also know as constants.
func TestDefaults(t *testing.T) {
	ctx := context.Background()
	m := &lanmonitorv1alpha1.LanMonitor{ObjectMeta: metav1.ObjectMeta{Name: "defaults"}}
	if err := env.Client.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, m) })
	want := lanmonitorv1alpha1.LanMonitorSpec{
		Promiscuous:       ptr.To(true),
		XDPMode:           lanmonitorv1alpha1.XDPModeAuto,
		TopN:              lanmonitorv1alpha1.DefaultTopN,
		ReportInterval:    &metav1.Duration{Duration: lanmonitorv1alpha1.DefaultReportInterval},
		MaxTrackedSources: lanmonitorv1alpha1.DefaultMaxTrackedSources,
	}
	if !equality.Semantic.DeepEqual(m.Spec, want) {
		t.Errorf("LanMonitor defaults:\n got %+v\nwant %+v", m.Spec, want)
	}

	b := &lanmonitorv1alpha1.IPBlock{
		ObjectMeta: metav1.ObjectMeta{Name: "defaults"},
		Spec:       lanmonitorv1alpha1.IPBlockSpec{CIDRs: []string{"198.18.0.0/15", "2001:db8::1"}},
	}
	if err := env.Client.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, b) })
	if b.Spec.Direction != lanmonitorv1alpha1.DirectionSource || b.Spec.Mode != lanmonitorv1alpha1.BlockModeEnforce {
		t.Errorf("IPBlock defaults: direction %q mode %q, want Source Enforce", b.Spec.Direction, b.Spec.Mode)
	}
}

// TestSamples creates every object of config/samples.
func TestSamples(t *testing.T) {
	ctx := context.Background()
	files, err := filepath.Glob("../../config/samples/lanmonitor_*.yaml")
	if err != nil || len(files) != 2 {
		t.Fatalf("samples: %v %v", files, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &u.Object); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := env.Client.Create(ctx, u); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if err := env.Client.Delete(ctx, u); err != nil {
			t.Error(err)
		}
	}
}

// TestStatusBounds checks that the status schema rejects an oversized
// top-talker list, so that no writer can grow an object without bound.
func TestStatusBounds(t *testing.T) {
	ctx := context.Background()
	m := &lanmonitorv1alpha1.LanMonitor{ObjectMeta: metav1.ObjectMeta{Name: "bounds"}}
	if err := env.Client.Create(ctx, m); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, m) })
	for i := range 101 {
		m.Status.TopTalkers = append(m.Status.TopTalkers, lanmonitorv1alpha1.Talker{Address: fmt.Sprintf("198.18.1.%d", i)})
	}
	err := env.Client.Status().Update(ctx, m)
	want := `LanMonitor.lanmonitor.io "bounds" is invalid: [status.topTalkers: Too many: 101: must have at most 100 items, ` + notChecked + `]`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
}

func TestFormatBitRate(t *testing.T) {
	for in, want := range map[int64]string{
		0:             "0 bit/s",
		999:           "999 bit/s",
		1000:          "1.0 kbit/s",
		12_345_678:    "12.3 Mbit/s",
		999_949:       "999.9 kbit/s",
		999_950:       "1.0 Mbit/s",
		2_500_000_000: "2.5 Gbit/s",
	} {
		if got := lanmonitorv1alpha1.FormatBitRate(in); got != want {
			t.Errorf("FormatBitRate(%d) = %q, want %q", in, got, want)
		}
	}
}
