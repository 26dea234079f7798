package sse

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// serve mounts h the way the agent and controller do: query check, then the
// hub's handler, errors answered as JSON.
func serve(t *testing.T, h *Hub) *httptest.Server {
	mux := http.NewServeMux()
	answer := func(w http.ResponseWriter, err error) {
		var he *HTTPError
		if errors.As(err, &he) {
			http.Error(w, he.Error(), he.Status)
		}
	}
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		if err := CheckQuery(r.URL.Query(), "since"); err != nil {
			answer(w, err)
			return
		}
		answer(w, h.ServeEvents(w, r))
	})
	mux.HandleFunc("GET /history", func(w http.ResponseWriter, r *http.Request) {
		if err := CheckQuery(r.URL.Query(), "since", "limit"); err != nil {
			answer(w, err)
			return
		}
		answer(w, h.ServeHistory(w, r))
	})
	srv := httptest.NewServer(mux)
	// Cleanups run last-in first-out: streams opened later close first.
	t.Cleanup(srv.Close)
	t.Cleanup(h.Close)
	return srv
}

type sseEvent struct {
	id   string
	data string
}

// stream reads events (and counts heartbeats) from an event stream.
type stream struct {
	resp       *http.Response
	sc         *bufio.Scanner
	heartbeats int
	retry      string
}

func open(t *testing.T, url string, lastID string) *stream {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	return &stream{resp: resp, sc: bufio.NewScanner(resp.Body)}
}

// next returns the next event, or an error at the end of the stream.
func (s *stream) next() (sseEvent, error) {
	var ev sseEvent
	for s.sc.Scan() {
		line := s.sc.Text()
		switch {
		case line == "":
			if ev.id != "" || ev.data != "" {
				return ev, nil
			}
		case strings.HasPrefix(line, ":"):
			s.heartbeats++
		case strings.HasPrefix(line, "retry: "):
			s.retry = strings.TrimPrefix(line, "retry: ")
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		}
	}
	if err := s.sc.Err(); err != nil {
		return ev, err
	}
	return ev, io.EOF
}

func (s *stream) want(t *testing.T, id uint64, data string) {
	t.Helper()
	ev, err := s.next()
	if err != nil {
		t.Fatalf("want event %d: %v", id, err)
	}
	if ev.id != fmt.Sprint(id) || ev.data != data {
		t.Fatalf("event = {id %s data %s}, want {id %d data %s}", ev.id, ev.data, id, data)
	}
}

var t0 = time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC)

func TestIDsAreTimeAndStrictlyIncreasing(t *testing.T) {
	h := NewHub(Options{})
	ms := uint64(t0.UnixMilli())
	for i, c := range []struct {
		at   time.Time
		want uint64
	}{
		{t0, ms},
		{t0, ms + 1},                         // same millisecond
		{t0.Add(-time.Hour), ms + 2},         // clock stepped back
		{t0.Add(time.Second), ms + 1000},     // later again
		{t0.Add(time.Second + 1), ms + 1001}, // a nanosecond later
	} {
		id, err := h.Publish(c.at, i)
		if err != nil || id != c.want {
			t.Fatalf("publish %d: id %d, %v; want %d", i, id, err, c.want)
		}
	}
}

func TestHistoryBounds(t *testing.T) {
	h := NewHub(Options{MaxAge: 10 * time.Second, MaxEvents: 5})
	for i := range 8 {
		h.Publish(t0.Add(time.Duration(i)*time.Second), i)
	}
	ids := func(evs []Event) (s []string) {
		for _, e := range evs {
			s = append(s, string(e.Data))
		}
		return s
	}
	if got := fmt.Sprint(ids(h.History(0, 0))); got != "[3 4 5 6 7]" {
		t.Fatalf("MaxEvents 5: history %s", got)
	}
	// Events 2 s apart, MaxAge 10 s: an event at 20 s keeps only itself
	// and those at 10 s or later.
	h = NewHub(Options{MaxAge: 10 * time.Second})
	for _, s := range []int{0, 5, 10, 15, 20} {
		h.Publish(t0.Add(time.Duration(s)*time.Second), s)
	}
	if got := fmt.Sprint(ids(h.History(0, 0))); got != "[10 15 20]" {
		t.Fatalf("MaxAge 10s: history %s", got)
	}
	if got := fmt.Sprint(ids(h.History(uint64(t0.Add(10*time.Second).UnixMilli()), 0))); got != "[15 20]" {
		t.Fatalf("since the 10 s event: %s", got)
	}
	if got := fmt.Sprint(ids(h.History(0, 1))); got != "[20]" {
		t.Fatalf("limit 1: %s", got)
	}
	if st := h.Stats(); st.HistoryEvents != 3 || st.HistoryBytes != 6 {
		t.Fatalf("stats %+v, want 3 events of 6 bytes", st)
	}
}

func TestStreamReplayAndLive(t *testing.T) {
	h := NewHub(Options{Heartbeat: 20 * time.Millisecond, Retry: 1500 * time.Millisecond})
	srv := serve(t, h)
	var ids []uint64
	for i := range 3 {
		id, _ := h.Publish(t0.Add(time.Duration(i)*time.Second), map[string]int{"n": i})
		ids = append(ids, id)
	}

	// A reconnecting browser (Last-Event-ID = the first event) is sent
	// the two it missed, then live events.
	s := open(t, srv.URL+"/events", fmt.Sprint(ids[0]))
	s.want(t, ids[1], `{"n":1}`)
	s.want(t, ids[2], `{"n":2}`)
	if s.retry != "1500" {
		t.Fatalf("retry %q, want 1500", s.retry)
	}
	id, _ := h.Publish(t0.Add(3*time.Second), map[string]int{"n": 3})
	s.want(t, id, `{"n":3}`)
	// Heartbeats keep an idle stream open.
	deadline := time.Now().Add(5 * time.Second)
	go func() {
		time.Sleep(100 * time.Millisecond)
		h.Publish(t0.Add(4*time.Second), map[string]int{"n": 4})
	}()
	s.want(t, id+1000, `{"n":4}`)
	if s.heartbeats == 0 || time.Now().After(deadline) {
		t.Fatalf("no heartbeat in 100 ms at a 20 ms heartbeat")
	}

	// ?since= does the same for a first connection; Last-Event-ID wins.
	s2 := open(t, srv.URL+"/events?since="+fmt.Sprint(ids[2]), "")
	s2.want(t, id, `{"n":3}`)
	s3 := open(t, srv.URL+"/events?since=1", fmt.Sprint(id))
	s3.want(t, id+1000, `{"n":4}`)
	// No since, no header: live events only.
	s4 := open(t, srv.URL+"/events", "")
	last, _ := h.Publish(t0.Add(5*time.Second), "live")
	s4.want(t, last, `"live"`)

	// Close ends every stream.
	h.Close()
	if _, err := s4.next(); err != io.EOF {
		t.Fatalf("after Close: %v, want EOF", err)
	}
	if _, err := h.Publish(t0, 1); err == nil {
		t.Fatal("publish after Close succeeded")
	}
}

func TestBadRequests(t *testing.T) {
	h := NewHub(Options{MaxEvents: 100, MaxClients: 1})
	h.Publish(t0, 1)
	srv := serve(t, h)
	for _, c := range []struct {
		path, lastID string
		status       int
		body         string
	}{
		{"/events?limit=3", "", 400, `unknown query parameter "limit" (allowed: [since])`},
		{"/events?since=abc", "", 400, `since: "abc" is not an event ID (a decimal number)`},
		{"/events", "-1", 400, `Last-Event-ID: "-1" is not an event ID (a decimal number)`},
		{"/events?since=1&since=2", "", 400, `query parameter "since" given 2 times`},
		{"/history?limit=1000000", "", 400, `limit: "1000000" is not a number from 1 to 100 (the history's size)`},
		{"/history?limit=0", "", 400, `limit: "0" is not a number from 1 to 100 (the history's size)`},
		{"/history?interface=x", "", 400, `unknown query parameter "interface" (allowed: [since limit])`},
	} {
		req, _ := http.NewRequest("GET", srv.URL+c.path, nil)
		if c.lastID != "" {
			req.Header.Set("Last-Event-ID", c.lastID)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || strings.TrimSpace(string(b)) != c.body {
			t.Errorf("GET %s (Last-Event-ID %q): %d %q, want %d %q", c.path, c.lastID, resp.StatusCode, b, c.status, c.body)
		}
	}

	// One client allowed: the second is refused with 429, the first
	// still gets events, and the refusal is counted.
	s := open(t, srv.URL+"/events", "")
	waitClients(t, h, 1)
	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 429 || strings.TrimSpace(string(b)) != "too many event-stream clients: at most 1 at once" {
		t.Fatalf("second client: %d %q", resp.StatusCode, b)
	}
	id, _ := h.Publish(t0.Add(time.Second), 2)
	s.want(t, id, "2")
	if st := h.Stats(); st.RefusedClients != 1 || st.Clients != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func waitClients(t *testing.T, h *Hub, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); h.Stats().Clients != n; {
		if time.Now().After(deadline) {
			t.Fatalf("clients = %d, want %d", h.Stats().Clients, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A client that reads nothing is dropped once its queue is full; Publish
// never waits for it, and a reconnect with its Last-Event-ID gets every
// event it missed.
func TestSlowClientIsDroppedNeverBlocks(t *testing.T) {
	h := NewHub(Options{ClientBuffer: 4})
	srv := serve(t, h)
	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitClients(t, h, 1)
	// Never read resp.Body: after the socket buffers fill, the handler
	// blocks in Write and the queue fills. 4 KiB events fill the buffers
	// in a few hundred events.
	big := strings.Repeat("x", 4096)
	start := time.Now()
	var first, last uint64
	for i := range 2000 {
		id, _ := h.Publish(t0.Add(time.Duration(i)*time.Millisecond), big)
		if i == 0 {
			first = id
		}
		last = id
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("2000 publishes took %v with a stuck client", d)
	}
	if st := h.Stats(); st.Clients != 0 || st.DroppedClients != 1 {
		t.Fatalf("stats %+v, want the stuck client dropped", st)
	}
	// Replay from the first event: the history holds everything since.
	hist := h.History(first, 0)
	if len(hist) != 1999 || hist[len(hist)-1].ID != last {
		t.Fatalf("history after %d: %d events ending %d, want 1999 ending %d", first, len(hist), hist[len(hist)-1].ID, last)
	}
}

func TestHistoryJSON(t *testing.T) {
	h := NewHub(Options{})
	srv := serve(t, h)
	get := func(q string) HistoryResponse {
		resp, err := http.Get(srv.URL + "/history" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var hr HistoryResponse
		if err := json.NewDecoder(resp.Body).Decode(&hr); err != nil {
			t.Fatal(err)
		}
		return hr
	}
	if hr := get(""); len(hr.Events) != 0 || hr.LastID != 0 || hr.Events == nil {
		t.Fatalf("empty: %+v", hr)
	}
	a, _ := h.Publish(t0, map[string]int{"a": 1})
	b, _ := h.Publish(t0.Add(time.Second), map[string]int{"b": 2})
	hr := get("")
	if len(hr.Events) != 2 || hr.Events[0].ID != a || string(hr.Events[1].Data) != `{"b":2}` || hr.LastID != b {
		t.Fatalf("history %+v", hr)
	}
	if hr := get(fmt.Sprintf("?since=%d", a)); len(hr.Events) != 1 || hr.Events[0].ID != b {
		t.Fatalf("since a: %+v", hr)
	}
	if hr := get("?limit=1"); len(hr.Events) != 1 || hr.Events[0].ID != b {
		t.Fatalf("limit 1: %+v", hr)
	}
}
