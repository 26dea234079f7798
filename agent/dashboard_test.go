package agent_test

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/lanmonitor/lanmonitor/internal/browsertest"
	"github.com/lanmonitor/lanmonitor/internal/frames"
	"github.com/lanmonitor/lanmonitor/internal/sse"
)

// The dashboard's cells the tests read (internal/webui/static/agent.html).
const (
	firstTalker  = `#talkers tbody tr:first-child th`
	blockDropped = `#blocks tbody tr[data-block="blocked"] td[data-col="dropped"]`
)

// talkerCell is the selector of a column of addr's row of the talkers table.
func talkerCell(addr, col string) string {
	return fmt.Sprintf(`#talkers tbody tr[data-addr=%q] td[data-col=%q]`, addr, col)
}

// TestDashboard: the page at / of a standalone agent on a lab LAN, in
// headless Chromium. A counted burst from a host and from a blocked host
// shows, without a reload, as the top talker with its exact packet count
// and as the IPBlock's exact dropped count; the table sorts by mouse and
// keyboard and filters by CIDR; a talker's history opens; pause holds the
// page still and resume catches up. Then, under varied traffic, it
// measures how long events take from the report to the page, and takes
// the screenshots of the README (saved in $LANMONITOR_SCREENSHOTS if set).
func TestDashboard(t *testing.T) {
	l := newLAN(t, lanOptions{})
	// lab-range covers the protected 198.18.0.70: exempted from it.
	monitor := monitor1s + "  protectedCIDRs: [\"198.18.0.70\"]\n"
	a := l.start(t, agentBinary(t, "dev"), manifests(t, t.TempDir(), monitor+ipblock("blocked", blockedSrc)+ipblock("lab-range", "198.18.0.64/26")))
	b := browsertest.New(t)
	b.Navigate(a.api + "/")
	b.WaitText("#conn", "live", 10*time.Second)
	browsertest.Eval[bool](b, `window.sameDocument = true`)
	for _, r := range b.Resources() {
		if !strings.HasPrefix(r.URL, a.api+"/") {
			t.Errorf("the page loaded %s, not from the agent", r.URL)
		}
		if strings.Contains(r.URL, "/api/v1/history") && r.DecodedBody >= 1024 && r.EncodedBody >= r.DecodedBody {
			t.Errorf("history of %.0f bytes not compressed: %+v", r.DecodedBody, r)
		}
	}

	const heavy = "198.18.0.21"
	const nHeavy, nBlocked = 250, 40
	for range nHeavy {
		l.send(t, udp(heavy, 1000))
	}
	for range nBlocked {
		l.send(t, udp(blockedSrc, 100))
	}
	b.WaitText(talkerCell(heavy, "packets"), strconv.Itoa(nHeavy), 5*time.Second)
	b.WaitText(blockDropped, strconv.Itoa(nBlocked), 5*time.Second)
	if got := b.Text(firstTalker); got != heavy {
		t.Errorf("top talker %q, want %s", got, heavy)
	}
	want := map[string]string{
		`#talkers tbody tr:first-child td[data-col="kind"]`:                "internal",
		talkerCell(heavy, "bytes"):                                         "254 KiB", // 250 frames of 1,042 bytes
		talkerCell(heavy, "localShare"):                                    "100.0% / 0.0%",
		talkerCell(blockedSrc, "packets"):                                  strconv.Itoa(nBlocked),
		`#blocks tbody tr[data-block="blocked"] td[data-col="matched"]`:    strconv.Itoa(nBlocked),
		`#blocks tbody tr[data-block="blocked"] td[data-col="mode"]`:       "Enforce",
		`#blocks tbody tr[data-block="blocked"] td[data-col="cidrCount"]`:  "1",
		`#blocks tbody tr[data-block="blocked"] td[data-col="exempted"]`:   "none",
		`#blocks tbody tr[data-block="lab-range"] td[data-col="exempted"]`: "198.18.0.70",
		`#blocks tbody tr[data-block="lab-range"] td[data-col="dropped"]`:  "0",
		"#state":         "Attached",
		"#xdp-mode":      "Native (native mode supported by the driver)",
		"#promisc":       "yes",
		"#tracked":       "2 of 65,536 (0.0%)",
		"#total-packets": strconv.Itoa(nHeavy + nBlocked),
		"#dropped":       strconv.Itoa(nBlocked) + " (0 pkt/s)",
		"#malformed":     "0 (0 pkt/s)",
		"#nonip":         "0 (0 pkt/s)",
		"#conn":          "live",
	}
	// The rates of the burst's report are gone by the next one; the
	// counters stay.
	b.Wait(`document.querySelector("#dropped").textContent === "40 (0 pkt/s)"`, 5*time.Second)
	for sel, w := range want {
		if got := b.Text(sel); got != w {
			t.Errorf("%s: %q, want %q", sel, got, w)
		}
	}
	if got := b.Attr(`#talkers thead th[data-key="bitsPerSecond"]`, "aria-sort"); got != "descending" {
		t.Errorf("rate column aria-sort %q, want descending", got)
	}

	// Live: ten more frames show without a reload.
	for range 10 {
		l.send(t, udp(heavy, 1000))
	}
	b.WaitText(talkerCell(heavy, "packets"), strconv.Itoa(nHeavy+10), 5*time.Second)
	if !browsertest.Eval[bool](b, `window.sameDocument === true`) {
		t.Fatal("the page was reloaded")
	}

	// Sorting: by mouse on Packets (descending, then ascending), by
	// keyboard on Address (Enter: ascending, again: descending).
	b.Click(`#talkers thead th[data-key="packets"] button`)
	b.WaitText(firstTalker, heavy, 2*time.Second)
	b.Click(`#talkers thead th[data-key="packets"] button`)
	b.WaitText(firstTalker, blockedSrc, 2*time.Second)
	if got := b.Attr(`#talkers thead th[data-key="packets"]`, "aria-sort"); got != "ascending" {
		t.Errorf("packets column aria-sort %q after two clicks, want ascending", got)
	}
	b.Press(`#talkers thead th[data-key="address"] button`, "\r")
	b.WaitText(firstTalker, heavy, 2*time.Second)
	b.Press(`#talkers thead th[data-key="address"] button`, "\r")
	b.WaitText(firstTalker, blockedSrc, 2*time.Second)
	if got := b.Attr(`#talkers thead th[data-key="packets"]`, "aria-sort"); got != "" {
		t.Errorf("packets column still aria-sort %q", got)
	}

	// Filter: a CIDR, an IPv6 CIDR matching nothing, an invalid one (all
	// rows stay, the box says why).
	for _, c := range []struct{ filter, rows, msg, invalid string }{
		{"198.18.0.64/26", blockedSrc, "1 of 2 talkers match", "false"},
		{"2001:db8::/32", "", "0 of 2 talkers match", "false"},
		{heavy, heavy, "1 of 2 talkers match", "false"},
		{"198.18.0.0/33", blockedSrc + " " + heavy, `invalid CIDR "198.18.0.0/33": want an address/prefix length such as 198.18.0.0/24 or 2001:db8::/32`, "true"},
		{"", blockedSrc + " " + heavy, "", "false"},
	} {
		b.Type("#filter", c.filter)
		if v := browsertest.Eval[string](b, `document.querySelector("#filter").value`); v != c.filter {
			t.Fatalf("typed %q into the filter box, it has %q", c.filter, v)
		}
		b.WaitText("#filter-msg", c.msg, 2*time.Second)
		if got := strings.Join(b.Texts("#talkers tbody th"), " "); got != c.rows {
			t.Errorf("filter %q: rows %q, want %q", c.filter, got, c.rows)
		}
		if got := b.Attr("#filter", "aria-invalid"); got != c.invalid {
			t.Errorf("filter %q: aria-invalid %q, want %s", c.filter, got, c.invalid)
		}
	}

	// A talker's rate history: opened by clicking its address, closed
	// with the keyboard.
	b.Click(fmt.Sprintf(`#talkers tbody tr[data-addr=%q] button`, heavy))
	b.WaitText("#talker-detail-title", "Rate history of "+heavy, 2*time.Second)
	b.Wait(`!document.querySelector("#talker-detail").hidden && document.querySelector("#chart-talker").dataset.points === document.querySelector("#chart-bits").dataset.points`, 2*time.Second)
	if got := b.Attr(fmt.Sprintf(`#talkers tbody tr[data-addr=%q] button`, heavy), "aria-pressed"); got != "true" {
		t.Errorf("selected talker's aria-pressed %q", got)
	}
	b.Press("#talker-detail-close", "\r")
	b.Wait(`document.querySelector("#talker-detail").hidden`, 2*time.Second)

	// Pause: nothing changes for two report intervals while frames are
	// counted; resume catches up from the stream's replay.
	b.Click("#pause")
	b.WaitText("#conn", "paused", 2*time.Second)
	received := b.Text("#events-received")
	for range 5 {
		l.send(t, udp(heavy, 1000))
	}
	time.Sleep(2500 * time.Millisecond)
	if got := b.Text(talkerCell(heavy, "packets")); got != strconv.Itoa(nHeavy+10) {
		t.Errorf("paused page changed: %s packets", got)
	}
	if got := b.Text("#events-received"); got != received {
		t.Errorf("paused page received events: %s, was %s", got, received)
	}
	if got := b.Text("#pause"); got != "Resume" {
		t.Errorf("pause button says %q while paused", got)
	}
	b.Click("#pause")
	b.WaitText("#conn", "live", 5*time.Second)
	b.WaitText(talkerCell(heavy, "packets"), strconv.Itoa(nHeavy+15), 5*time.Second)
	var hist sse.HistoryResponse
	a.get("/api/v1/history", &hist)
	b.Wait(fmt.Sprintf(`Number(document.body.dataset.lastEventId) >= %d`, hist.LastID), 3*time.Second)
	if got := b.Text("#events-received"); got != strconv.Itoa(countUpTo(hist, browsertest.Eval[uint64](b, `Number(document.body.dataset.lastEventId)`))) {
		t.Errorf("after resume the page has %s events, the agent's history %d", got, len(hist.Events))
	}

	// Light and dark follow prefers-color-scheme.
	for scheme, bg := range map[string]string{"dark": "rgb(13, 17, 23)", "light": "rgb(246, 247, 249)"} {
		b.ColorScheme(scheme)
		if got := browsertest.Eval[string](b, `getComputedStyle(document.body).backgroundColor`); got != bg {
			t.Errorf("%s: background %s, want %s", scheme, got, bg)
		}
	}

	// Varied traffic for the screenshots and the latency measurement.
	// Until now the page's events came from the history, the stream and a
	// replay; count from here.
	from := browsertest.Eval[int](b, `window.lmReceived.length`)
	stop := lanTraffic(t, l, time.Minute)
	b.Click(`#talkers thead th[data-key="bitsPerSecond"] button`)
	b.WaitText(firstTalker, heavy, 5*time.Second)
	time.Sleep(25 * time.Second)
	lat := browsertest.Eval[[]float64](b, fmt.Sprintf(`window.lmReceived.slice(%d).filter(r => r.live).map(r => r.arrivedMs - r.id)`, from))
	slices.Sort(lat)
	if len(lat) < 20 {
		t.Fatalf("%d events in 25 s of traffic at a 1 s report interval", len(lat))
	}
	t.Logf("report to page: %d events, median %.0f ms, max %.0f ms (the event's time is when the counters were read)", len(lat), lat[len(lat)/2], lat[len(lat)-1])

	b.Select("#window", "60")
	b.Click(fmt.Sprintf(`#talkers tbody tr[data-addr=%q] button`, heavy))
	b.WaitText("#talker-detail-title", "Rate history of "+heavy, 2*time.Second)
	b.Wait(`document.querySelector("#chart-talker").dataset.points === document.querySelector("#chart-bits").dataset.points`, 2*time.Second)
	// The README's screenshots: LANMONITOR_SCREENSHOTS=$PWD/docs/screenshots.
	shots := os.Getenv("LANMONITOR_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	b.Screenshot(filepath.Join(shots, "agent.png"))
	b.ColorScheme("dark")
	b.Screenshot(filepath.Join(shots, "agent-dark.png"))
	b.ColorScheme("light")
	b.Viewport(390, 844, true)
	b.Wait(`document.documentElement.scrollWidth <= 390`, 2*time.Second)
	b.Screenshot(filepath.Join(shots, "agent-phone.png"))
	stop()
	if msgs := b.Messages(); len(msgs) > 0 {
		t.Errorf("console: %q", msgs)
	}
}

// countUpTo is the number of events of h with an ID up to last.
func countUpTo(h sse.HistoryResponse, last uint64) int {
	n := 0
	for _, e := range h.Events {
		if e.ID <= last {
			n++
		}
	}
	return n
}

// lanTraffic sends varied traffic from the host for d, or until the
// returned function is called (it waits for the sender to end): the heavy
// host's steady 2 Mbit/s and a few lighter internal, external and IPv6
// sources whose rates swing, some of it snooped (to another MAC), and the
// blocked source.
func lanTraffic(t *testing.T, l *lan, d time.Duration) (stop func()) {
	t.Helper()
	type source struct {
		frame []byte
		pps   float64 // mean frames per second
		swing float64 // amplitude of the rate's swing, as a fraction of pps
	}
	snooped := func(src string, payload int) []byte {
		return withSpec(src, func(s *frames.Spec) { s.DstMAC = otherMAC; s.Payload = payload })
	}
	tcp6 := frames.MustBuild(frames.Spec{SrcMAC: hostMAC, DstMAC: nodeMAC, Src: netip.MustParseAddr("2001:db8:1::5"), Dst: nodeIP6, Protocol: layers.IPProtocolTCP, SrcPort: 443, DstPort: 5000, Payload: 700})
	sources := []source{
		{udp("198.18.0.21", 1200), 200, 0.1},
		{udp("198.18.0.22", 800), 120, 0.6},
		{snooped("198.18.0.23", 500), 100, 0.8},
		{udp("198.19.0.7", 1000), 60, 0.9},
		{udp("2001:db8::22", 400), 80, 0.5},
		{tcp6, 40, 0.7},
		{udp(blockedSrc, 100), 20, 0.3},
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		sent := make([]float64, len(sources))
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for time.Since(start) < d {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			s := time.Since(start).Seconds()
			for i, src := range sources {
				// Frames due by now at a rate swinging with a period of
				// 12 s, each source in its own phase.
				due := src.pps * (s - src.swing*12/(2*math.Pi)*(math.Cos(2*math.Pi*s/12+float64(i))-math.Cos(float64(i))))
				for ; sent[i] < due; sent[i]++ {
					l.tx.Send(src.frame)
				}
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// freeAddr returns a loopback address with a port free now, for an agent
// that must come back on the same one.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestDashboardReconnect: the agent is killed and restarted (it adopts
// its pinned maps, so the counters continue). The page says reconnecting,
// keeps retrying while the agent is down, and when it reaches the new
// agent it is replayed, from its Last-Event-ID, every report it missed:
// it ends with exactly the events of both agents, and the packets sent
// while no agent ran. Before, the talker table nearly full shows a warning.
func TestDashboardReconnect(t *testing.T) {
	l := newLAN(t, lanOptions{})
	bin := agentBinary(t, "dev")
	file := manifests(t, t.TempDir(), monitor1s+"  maxTrackedSources: 16\n")
	addr := freeAddr(t)
	a := l.start(t, bin, file, "--listen", addr)
	b := browsertest.New(t)
	b.Navigate(a.api + "/")
	b.WaitText("#conn", "live", 10*time.Second)
	const host = "198.18.0.30"
	l.sendOnOneCPU(t, slices.Repeat([][]byte{udp(host, 200)}, 30)...)
	b.WaitText(talkerCell(host, "packets"), "30", 5*time.Second)
	// Near the capacity: a warning.
	if got := b.Attr("#tracked", "class"); got != "" {
		t.Errorf("tracked sources class %q with 1 of 16", got)
	}
	// The talker table holds exactly its capacity: 15 sources of 16 is
	// over 90% full, and the page says what the agent says.
	for i := range 14 {
		l.sendOnOneCPU(t, udp(fmt.Sprintf("198.18.0.%d", 100+i), 20))
	}
	time.Sleep(1500 * time.Millisecond) // a report
	if st := a.stats(); st.TrackedSources != 15 || st.TalkersFull != 0 {
		t.Errorf("the agent tracks %d of 16 sources (%d frames found it full), want 15 (0)", st.TrackedSources, st.TalkersFull)
	}
	b.Wait(`document.querySelector("#tracked").textContent.startsWith("15 of 16 (")`, 5*time.Second)
	b.Wait(`document.querySelector("#tracked").textContent.includes("over 90% full, the sources idle longest are evicted")`, 5*time.Second)
	if got := b.Attr("#tracked", "class"); got != "warn" {
		t.Errorf("tracked sources class %q at 15 of 16, want warn", got)
	}

	// The browser's reconnections fail while the agent is down, and until
	// the new agent has published reports the page has not seen.
	unblock := b.Block("*/api/v1/events*")
	var before sse.HistoryResponse
	a.get("/api/v1/history", &before)
	a.stop(syscall.SIGKILL)
	b.WaitText("#conn", "reconnecting", 5*time.Second)
	seen := browsertest.Eval[uint64](b, `Number(document.body.dataset.lastEventId)`)
	for range 20 {
		l.send(t, udp(host, 200))
	}
	time.Sleep(3 * time.Second) // the browser retries (every 2 s) and fails
	if got := b.Text("#conn"); got != "reconnecting" {
		t.Fatalf("stream %q while the agent is down", got)
	}
	if got := b.Text("#alert"); got != "connection to the agent lost; reconnecting…" {
		t.Errorf("alert %q", got)
	}

	c := l.start(t, bin, file, "--listen", addr)
	var missed sse.HistoryResponse
	waitFor(t, 10*time.Second, "three reports of the new agent", func() bool {
		c.get("/api/v1/history", &missed)
		return len(missed.Events) >= 3
	})
	if got := b.Text("#conn"); got != "reconnecting" {
		t.Fatalf("stream %q before it is let through", got)
	}
	unblocked := time.Now()
	unblock()
	b.WaitText("#conn", "live", 10*time.Second)
	b.WaitText(talkerCell(host, "packets"), "50", 5*time.Second)
	var after sse.HistoryResponse
	c.get("/api/v1/history", &after)
	b.Wait(fmt.Sprintf(`Number(document.body.dataset.lastEventId) >= %d`, after.LastID), 5*time.Second)
	last := browsertest.Eval[uint64](b, `Number(document.body.dataset.lastEventId)`)

	// Every event of the first agent the page had, then every event of the
	// second up to the page's last: none missing, none twice.
	var want []uint64
	for _, e := range before.Events {
		if e.ID <= seen {
			want = append(want, e.ID)
		}
	}
	if want[len(want)-1] != seen {
		t.Fatalf("the page's last event %d is not the first agent's (%v)", seen, want)
	}
	replayed := 0
	for _, e := range after.Events {
		if e.ID <= last {
			want = append(want, e.ID)
		}
		if e.ID <= missed.LastID {
			replayed++
		}
	}
	got := browsertest.Eval[[]uint64](b, `window.lmReceived.map(r => r.id)`)
	if !slices.Equal(got, want) {
		t.Errorf("the page's events\n %v\nwant\n %v", got, want)
	}
	if n := b.Text("#events-received"); n != strconv.Itoa(len(want)) {
		t.Errorf("events received %s, want %d", n, len(want))
	}
	// The chart is redrawn on the next animation frame after the events.
	b.WaitAttr("#chart-bits", "data-points", strconv.Itoa(len(want)), 5*time.Second)
	t.Logf("%d reports replayed from Last-Event-ID %d on reconnecting (%v after the stream was let through)", replayed, seen, time.Since(unblocked).Round(time.Millisecond))
	if msgs := b.Messages(); len(msgs) > 0 {
		t.Logf("console: %q", msgs)
	}
}
