package controllers_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/lanmonitor/lanmonitor/agent"
	"github.com/lanmonitor/lanmonitor/agent/kernel/fake"
)

// testAgent is one node's real agent (agent.RunKubernetes: the same
// LanMonitorNode status writer as in production, serving nothing) on a
// fake kernel (agent/kernel/fake) with one interface, lan0, which carries
// the default route. The tests choose its traffic.
type testAgent struct {
	Node   string
	Kernel *fake.Kernel

	cancel context.CancelFunc
	done   chan struct{}
	err    error
	stop   sync.Once
	errors atomic.Int64 // ERROR log lines
}

// agentOptions tune startAgents.
type agentOptions struct {
	// clock times the agents' reports (rates are exact on a fake one);
	// nil is the real clock.
	clock clock.WithTicker
	// setup prepares a node's fake kernel before its agent starts.
	setup func(node string, k *fake.Kernel)
	// maxRules is the agents' --max-rules (0: the default).
	maxRules uint32
	// statusSettle is the agents' --status-settle (0: the default; < 0:
	// none).
	statusSettle time.Duration
}

// agentConn is the REST mapper the agents of a test binary share (1,000
// discoveries would measure the test, not the agents).
var agentConn struct {
	once   sync.Once
	mapper meta.RESTMapper
	err    error
}

// startAgents starts a real agent per node and stops them when the test
// ends.
func startAgents(t testing.TB, o agentOptions, nodes ...string) map[string]*testAgent {
	t.Helper()
	agentConn.once.Do(func() {
		hc, err := rest.HTTPClientFor(env.Config)
		if err == nil {
			agentConn.mapper, err = apiutil.NewDynamicRESTMapper(env.Config, hc)
		}
		agentConn.err = err
	})
	if agentConn.err != nil {
		t.Fatal(agentConn.err)
	}
	out := map[string]*testAgent{}
	for _, n := range nodes {
		k := fake.New()
		k.AddInterface("lan0")
		if o.setup != nil {
			o.setup(n, k)
		}
		ctx, cancel := context.WithCancel(context.Background())
		a := &testAgent{Node: n, Kernel: k, cancel: cancel, done: make(chan struct{})}
		log := slog.New(&errorCounter{n: &a.errors, Handler: logHandler()})
		// Its own connection to the API server, as on its own node: a
		// config with a dialer is not served from client-go's transport
		// cache, which would put every agent's watches on one connection.
		rc := agent.KubernetesRESTConfig(env.Config)
		rc.Dial = (&net.Dialer{}).DialContext
		hc, err := rest.HTTPClientFor(rc)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			defer close(a.done)
			a.err = agent.RunKubernetes(ctx, agent.KubernetesOptions{
				NodeName: n, RESTConfig: rc, Serving: agent.Serving{Disabled: true},
				HTTPClient: hc, Mapper: agentConn.mapper, StatusSettle: o.statusSettle,
				Manager: agent.Options{Kernel: k, Clock: o.clock, Logger: log, MaxRules: o.maxRules},
			})
		}()
		t.Cleanup(func() {
			if err := a.Stop(); err != nil {
				t.Errorf("agent %s: %v", n, err)
			}
		})
		out[n] = a
	}
	return out
}

// Stop stops the agent (its interface stays attached, as when a pod is
// deleted) and returns what RunKubernetes returned.
func (a *testAgent) Stop() error {
	a.stop.Do(a.cancel)
	<-a.done
	return a.err
}

// Errors is the number of ERROR lines the agent logged.
func (a *testAgent) Errors() int64 { return a.errors.Load() }

// datapath waits for the agent's datapath on lan0 and the Manager's first
// report (the baseline of its rates: frames given before it would not
// count in the first interval's rates).
func (a *testAgent) datapath(t testing.TB) *fake.Datapath {
	t.Helper()
	deadline := time.Now().Add(time.Minute) // 1,000 agents starting on 2 cores
	for {
		if d := a.Kernel.Datapath("lan0"); d != nil && d.RuleCounterReads() > 0 {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s: no datapath on lan0 after a minute", a.Node)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// receive gives frames to the agent's datapath.
func (a *testAgent) receive(t testing.TB, frames ...fake.Frame) {
	t.Helper()
	d := a.datapath(t)
	for _, f := range frames {
		d.Receive(f)
	}
}

func logHandler() slog.Handler {
	var w io.Writer = io.Discard
	if os.Getenv("LANMONITOR_TEST_LOG") != "" {
		w = os.Stderr
	}
	return slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})
}

// errorCounter counts the ERROR records that pass through it.
type errorCounter struct {
	slog.Handler
	n *atomic.Int64
}

func (h *errorCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		h.n.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h *errorCounter) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &errorCounter{Handler: h.Handler.WithAttrs(attrs), n: h.n}
}

func (h *errorCounter) WithGroup(name string) slog.Handler {
	return &errorCounter{Handler: h.Handler.WithGroup(name), n: h.n}
}

// statusWrites reads the API server's own count of LanMonitorNode status
// patches (apiserver_request_total): the agents are their only writers.
// ok are the 2xx answers, failed the rest.
func statusWrites(t testing.TB) (ok, failed int) {
	t.Helper()
	hc, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(strings.TrimSuffix(env.Config.Host, "/") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("API server metrics: %d %v", resp.StatusCode, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	f := families["apiserver_request_total"]
	if f == nil {
		t.Fatal("API server metrics: no apiserver_request_total")
	}
	for _, m := range f.GetMetric() {
		l := map[string]string{}
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		if l["resource"] != "lanmonitornodes" || l["subresource"] != "status" || l["verb"] != "PATCH" {
			continue
		}
		if n := int(m.GetCounter().GetValue()); strings.HasPrefix(l["code"], "2") {
			ok += n
		} else {
			failed += n
		}
	}
	return ok, failed
}
