package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lanmonitor/lanmonitor/internal/lab"
)

// Flow is UDP traffic from one lab host to another address of the LAN,
// sent through the host's own network stack (ARP, IPv6 neighbour discovery
// and all), at a steady rate.
type Flow struct {
	// Name describes the flow in logs ("heavy", "blocked"...).
	Name string
	// From is the namespace sending; Src its address, Dst the destination.
	From     *lab.NS
	Src, Dst netip.Addr
	// Port is the destination UDP port (a sink listens there).
	Port int
	// Payload is the UDP payload per datagram, in bytes.
	Payload int
	// PPS is the rate in datagrams (frames) per second.
	PPS int
	// Count stops the flow after that many datagrams; 0 runs until Stop.
	Count int64
}

// FrameBytes is the Ethernet frame length of one datagram of the flow:
// payload, UDP (8), IP (20 or 40) and Ethernet (14) headers.
func (f Flow) FrameBytes() int {
	ip := 20
	if f.Src.Is6() {
		ip = 40
	}
	return f.Payload + 8 + ip + 14
}

// BitsPerSecond is the flow's rate in frame bits per second, as XDP counts it.
func (f Flow) BitsPerSecond() int64 { return int64(f.FrameBytes()) * 8 * int64(f.PPS) }

// Sender is a running Flow.
type Sender struct {
	Flow
	sent   atomic.Int64
	conn   *net.UDPConn
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Sent is how many datagrams the kernel accepted so far.
func (s *Sender) Sent() int64 { return s.sent.Load() }

// Wait waits until the flow ends (Count reached or Stop) and returns its error.
func (s *Sender) Wait() error {
	<-s.done
	return s.err
}

// Stop ends the flow and waits for it.
func (s *Sender) Stop() {
	s.cancel()
	<-s.done
}

// StartFlow opens a UDP socket inside f.From (bound to f.Src; the socket
// stays in that namespace whatever thread uses it) and sends at f.PPS until
// ctx ends, Stop, or f.Count datagrams.
func StartFlow(ctx context.Context, f Flow) (*Sender, error) {
	if f.PPS <= 0 {
		return nil, fmt.Errorf("flow %s: rate %d datagrams/s", f.Name, f.PPS)
	}
	var conn *net.UDPConn
	err := f.From.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp", &net.UDPAddr{IP: f.Src.AsSlice()}, &net.UDPAddr{IP: f.Dst.AsSlice(), Port: f.Port})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("flow %s: socket in %s: %w", f.Name, f.From.Name, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Sender{Flow: f, conn: conn, cancel: cancel, done: make(chan struct{})}
	go s.run(ctx)
	return s, nil
}

// run sends in bursts every 10 ms, keeping the total on the schedule
// start + n/PPS, so the long-run rate is exact whatever the timer jitter.
func (s *Sender) run(ctx context.Context) {
	defer close(s.done)
	defer s.conn.Close()
	payload := make([]byte, s.Payload)
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		due := int64(time.Since(start).Seconds() * float64(s.PPS))
		if s.Count > 0 {
			due = min(due, s.Count)
		}
		for s.sent.Load() < due {
			if _, err := s.conn.Write(payload); err != nil {
				// An unreachable port answered with ICMP: not a
				// failure of the flow, the next write goes out.
				if !errors.Is(err, syscall.ECONNREFUSED) {
					s.err = fmt.Errorf("flow %s: %w", s.Name, err)
					return
				}
				continue
			}
			s.sent.Add(1)
		}
		if s.Count > 0 && s.sent.Load() >= s.Count {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Sink receives and discards UDP datagrams on a port of a namespace, so that
// the receiving stack answers no ICMP port-unreachable, and counts them by
// source address: what reached the namespace's stack.
type Sink struct {
	conn *net.UDPConn
	wg   sync.WaitGroup
	mu   sync.Mutex
	from map[netip.Addr]int64
}

// StartSink listens on UDP port in ns (every address).
func StartSink(ns *lab.NS, port int) (*Sink, error) {
	var conn *net.UDPConn
	err := ns.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp", &net.UDPAddr{Port: port})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sink in %s: %w", ns.Name, err)
	}
	k := &Sink{conn: conn, from: map[netip.Addr]int64{}}
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		buf := make([]byte, 65536)
		for {
			_, src, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			k.mu.Lock()
			k.from[src.Addr().Unmap()]++
			k.mu.Unlock()
		}
	}()
	return k, nil
}

// From is how many datagrams from src arrived.
func (k *Sink) From(src netip.Addr) int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.from[src]
}

// Close stops the sink.
func (k *Sink) Close() error {
	err := k.conn.Close()
	k.wg.Wait()
	return err
}
