// Package sse publishes a stream of JSON events to web clients as
// Server-Sent Events (WHATWG HTML Living Standard, "Server-sent events",
// the text/event-stream format) and keeps a bounded history of them, so
// that a client that opens a page now, or reconnects with Last-Event-ID,
// gets the recent past at once.
//
// One Hub serves one stream (the agent has one per interface, the
// controller one for the cluster). Publish never blocks: every client has
// a bounded queue, and a client whose queue is full is disconnected (its
// browser reconnects with Last-Event-ID and is replayed what it missed
// from the history). The number of clients is capped.
//
// Event IDs are the event's time in Unix milliseconds, made strictly
// increasing: they survive a restart of the publishing process, so a
// browser that reconnects to a restarted agent with the Last-Event-ID of
// the old one is sent exactly the events it has not seen.
package sse

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Options bound a Hub. Zero fields take the defaults below.
type Options struct {
	// MaxAge is how long events stay in the history, measured between
	// event times. Default 10 minutes.
	MaxAge time.Duration
	// MaxEvents caps the history's length whatever MaxAge says. Default
	// 4096 (over 10 minutes at a 1 s report interval with room to spare).
	MaxEvents int
	// MaxClients caps concurrent event-stream clients; one more is
	// answered 429. Default 128.
	MaxClients int
	// ClientBuffer is how many events may wait for a slow client before
	// it is disconnected. Default 32.
	ClientBuffer int
	// Heartbeat is the interval of the comment lines sent to idle
	// streams so that proxies and browsers keep them open. Default 15 s.
	Heartbeat time.Duration
	// Retry is the reconnection delay sent to clients (the stream's
	// "retry:" field). Default 2 s.
	Retry time.Duration
	// WriteTimeout bounds one write to a client; a client that does not
	// take its bytes in time is disconnected. Default 10 s.
	WriteTimeout time.Duration
}

func (o *Options) setDefaults() {
	if o.MaxAge <= 0 {
		o.MaxAge = 10 * time.Minute
	}
	if o.MaxEvents <= 0 {
		o.MaxEvents = 4096
	}
	if o.MaxClients <= 0 {
		o.MaxClients = 128
	}
	if o.ClientBuffer <= 0 {
		o.ClientBuffer = 32
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 15 * time.Second
	}
	if o.Retry <= 0 {
		o.Retry = 2 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
}

// Event is one published event: its ID, its time and its JSON encoding.
type Event struct {
	ID   uint64
	Time time.Time
	Data json.RawMessage
}

// Hub is one stream of events with its history and clients. It is safe for
// concurrent use.
type Hub struct {
	opts Options

	mu      sync.Mutex
	history []Event // oldest first
	lastID  uint64
	clients map[*client]struct{}
	closed  chan struct{}
	bytes   int // sum of len(Data) over history

	dropped atomic.Uint64 // clients disconnected for being slow
	refused atomic.Uint64 // clients refused for the cap
}

type client struct {
	events chan Event
	gone   chan struct{} // closed when the hub drops the client
}

// NewHub returns an empty Hub.
func NewHub(o Options) *Hub {
	o.setDefaults()
	return &Hub{opts: o, clients: map[*client]struct{}{}, closed: make(chan struct{})}
}

// Publish JSON-encodes v and sends it to every client as the event of time
// t, and keeps it in the history (dropping events older than MaxAge before
// t, and the oldest beyond MaxEvents). It returns the event's ID: t in Unix
// milliseconds, or the previous ID + 1 when that is not greater (two
// events in one millisecond, or the clock stepped back). It never blocks on
// a client. Errors: v cannot be encoded, or the hub is closed.
func (h *Hub) Publish(t time.Time, v any) (uint64, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode event: %w", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.closed:
		return 0, errors.New("publish: hub is closed")
	default:
	}
	id := max(uint64(max(t.UnixMilli(), 0)), h.lastID+1)
	ev := Event{ID: id, Time: t, Data: data}
	h.lastID = id
	h.history = append(h.history, ev)
	h.bytes += len(data)
	drop := 0
	for drop < len(h.history)-1 && (len(h.history)-drop > h.opts.MaxEvents || t.Sub(h.history[drop].Time) > h.opts.MaxAge) {
		h.bytes -= len(h.history[drop].Data)
		drop++
	}
	if drop > 0 {
		// Shift instead of reslicing so the backing array does not grow
		// without bound.
		h.history = append(h.history[:0], h.history[drop:]...)
	}
	for c := range h.clients {
		select {
		case c.events <- ev:
		default:
			h.dropLocked(c)
			h.dropped.Add(1)
		}
	}
	return id, nil
}

func (h *Hub) dropLocked(c *client) {
	delete(h.clients, c)
	close(c.gone)
}

// Close disconnects every client and refuses further events.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.closed:
		return
	default:
	}
	close(h.closed)
	for c := range h.clients {
		h.dropLocked(c)
	}
}

// History returns the events after ID since (all retained events when
// since is 0), oldest first, at most limit of them (the newest limit; all
// when limit <= 0).
func (h *Hub) History(since uint64, limit int) []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.historyLocked(since, limit)
}

func (h *Hub) historyLocked(since uint64, limit int) []Event {
	i, _ := slices.BinarySearchFunc(h.history, since+1, func(e Event, id uint64) int {
		switch {
		case e.ID < id:
			return -1
		case e.ID > id:
			return 1
		}
		return 0
	})
	evs := h.history[i:]
	if limit > 0 && len(evs) > limit {
		evs = evs[len(evs)-limit:]
	}
	return slices.Clone(evs)
}

// Stats are a hub's gauges and counters.
type Stats struct {
	Clients        int    // connected event-stream clients
	HistoryEvents  int    // events in the history
	HistoryBytes   int    // bytes of their JSON encodings
	DroppedClients uint64 // clients disconnected because their queue was full
	RefusedClients uint64 // clients answered 429 because of MaxClients
}

// Stats reads the hub's gauges and counters.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Stats{
		Clients: len(h.clients), HistoryEvents: len(h.history), HistoryBytes: h.bytes,
		DroppedClients: h.dropped.Load(), RefusedClients: h.refused.Load(),
	}
}

// MaxEvents is the history's cap, the largest limit History answers.
func (h *Hub) MaxEvents() int { return h.opts.MaxEvents }

// subscribe registers a client and returns the history after since, in
// one step so that no event falls between the two. Errors: the client cap
// is reached, or the hub is closed.
func (h *Hub) subscribe(since uint64) (*client, []Event, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.closed:
		return nil, nil, errors.New("the stream has ended")
	default:
	}
	if len(h.clients) >= h.opts.MaxClients {
		h.refused.Add(1)
		return nil, nil, errTooManyClients
	}
	c := &client{events: make(chan Event, h.opts.ClientBuffer), gone: make(chan struct{})}
	h.clients[c] = struct{}{}
	return c, h.historyLocked(since, 0), nil
}

var errTooManyClients = errors.New("too many event-stream clients")

func (h *Hub) unsubscribe(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.clients[c]; ok {
		h.dropLocked(c)
	}
}

// HTTPError is an error with the HTTP status it should be answered with.
type HTTPError struct {
	Status int
	Err    error
}

func (e *HTTPError) Error() string { return e.Err.Error() }
func (e *HTTPError) Unwrap() error { return e.Err }

// WriteError answers err (nil: nothing) as JSON {"error": "..."} with
// the status of its HTTPError, or 500 for any other error.
func WriteError(w http.ResponseWriter, err error) {
	if err == nil {
		return
	}
	status := http.StatusInternalServerError
	var he *HTTPError
	if errors.As(err, &he) {
		status = he.Status
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

func badRequest(format string, a ...any) error {
	return &HTTPError{Status: http.StatusBadRequest, Err: fmt.Errorf(format, a...)}
}

// CheckQuery returns a 400 HTTPError naming the first query parameter of q
// that is not in allowed, or a parameter given more than once.
func CheckQuery(q url.Values, allowed ...string) error {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.Contains(allowed, k) {
			return badRequest("unknown query parameter %q (allowed: %v)", k, allowed)
		}
		if len(q[k]) > 1 {
			return badRequest("query parameter %q given %d times", k, len(q[k]))
		}
	}
	return nil
}

// parseID reads an event ID; empty is 0.
func parseID(name, s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, badRequest("%s: %q is not an event ID (a decimal number)", name, s)
	}
	return id, nil
}

// ServeEvents answers GET of an event stream: text/event-stream, first the
// retained events after the request's Last-Event-ID header (a browser's
// EventSource sends it when it reconnects) or, without the header, after
// its ?since= parameter (none: no replay), then each event as it is
// published, and a comment line every Heartbeat. Each event is
//
//	id: <ID>
//	data: <JSON>
//
// The caller checks the query parameters (CheckQuery) before; ServeEvents
// reads only since. It returns a non-nil HTTPError, without writing
// anything, for a bad ID (400) and a full hub (429); then the caller
// answers it. It returns nil when the stream ended: the client went away,
// was too slow, or the hub closed.
func (h *Hub) ServeEvents(w http.ResponseWriter, r *http.Request) error {
	since, err := parseID("since", r.URL.Query().Get("since"))
	if err != nil {
		return err
	}
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		if since, err = parseID("Last-Event-ID", v); err != nil {
			return err
		}
	}
	replay := since != 0
	c, past, err := h.subscribe(since)
	if errors.Is(err, errTooManyClients) {
		return &HTTPError{Status: http.StatusTooManyRequests, Err: fmt.Errorf("%w: at most %d at once", err, h.opts.MaxClients)}
	}
	if err != nil {
		return &HTTPError{Status: http.StatusServiceUnavailable, Err: err}
	}
	defer h.unsubscribe(c)
	if !replay {
		past = nil
	}

	rc := http.NewResponseController(w)
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no") // proxies: do not buffer the stream
	w.WriteHeader(http.StatusOK)

	var buf bytes.Buffer
	fmt.Fprintf(&buf, "retry: %d\n\n", h.opts.Retry.Milliseconds())
	for _, ev := range past {
		writeEvent(&buf, ev)
	}
	send := func() bool {
		rc.SetWriteDeadline(time.Now().Add(h.opts.WriteTimeout))
		_, err := w.Write(buf.Bytes())
		buf.Reset()
		return err == nil && rc.Flush() == nil
	}
	if !send() {
		return nil
	}
	heartbeat := time.NewTicker(h.opts.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case ev := <-c.events:
			writeEvent(&buf, ev)
			// Send whatever else is queued in the same write.
			for more := true; more; {
				select {
				case ev := <-c.events:
					writeEvent(&buf, ev)
				default:
					more = false
				}
			}
		case <-heartbeat.C:
			buf.WriteString(": heartbeat\n\n")
		case <-c.gone:
			return nil
		case <-r.Context().Done():
			return nil
		}
		if !send() {
			return nil
		}
	}
}

func writeEvent(buf *bytes.Buffer, ev Event) {
	// JSON from encoding/json has no raw newlines, so one data line holds it.
	fmt.Fprintf(buf, "id: %d\ndata: %s\n\n", ev.ID, ev.Data)
}

// HistoryResponse is the body of a history request.
type HistoryResponse struct {
	// Events are oldest first.
	Events []HistoryEvent `json:"events"`
	// LastID is the ID of the newest event published (0: none yet); a
	// client passes it as ?since= to the event stream to continue
	// without a gap.
	LastID uint64 `json:"lastId"`
}

// HistoryEvent is one event of HistoryResponse: its ID and its data, the
// same JSON the event stream carries.
type HistoryEvent struct {
	ID   uint64          `json:"id"`
	Data json.RawMessage `json:"data"`
}

// ServeHistory answers GET of the history as JSON (HistoryResponse): the
// events after ?since=ID (default: all retained), the newest ?limit=N of
// them (1..MaxEvents; default all). The caller checks the query
// parameters (CheckQuery) before. Errors (nothing written): a bad since or
// limit, as a 400 HTTPError.
func (h *Hub) ServeHistory(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	since, err := parseID("since", q.Get("since"))
	if err != nil {
		return err
	}
	limit := 0
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > h.opts.MaxEvents {
			return badRequest("limit: %q is not a number from 1 to %d (the history's size)", s, h.opts.MaxEvents)
		}
		limit = n
	}
	h.mu.Lock()
	evs := h.historyLocked(since, limit)
	last := h.lastID
	h.mu.Unlock()
	resp := HistoryResponse{Events: make([]HistoryEvent, len(evs)), LastID: last}
	for i, ev := range evs {
		resp.Events[i] = HistoryEvent{ID: ev.ID, Data: ev.Data}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	json.NewEncoder(w).Encode(resp) // an error here is a client gone away
	return nil
}
