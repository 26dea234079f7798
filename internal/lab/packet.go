package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// htons converts a 16-bit value to network byte order for sockaddr_ll and
// socket(2) protocol numbers.
func htons(v uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))
}

// packetSocket creates an AF_PACKET socket inside the namespace, with
// protocol 0: it receives nothing until bound with a protocol.
func (n *NS) packetSocket(flags int) (int, error) {
	fd := -1
	err := n.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|flags, 0)
		return err
	})
	if err != nil {
		return -1, fmt.Errorf("lab: packet socket in %s: %w", n.Name, err)
	}
	return fd, nil
}

// ifindex returns the index of ifname in the namespace.
func (n *NS) ifindex(ifname string) (int, error) {
	link, err := n.Link(ifname)
	if err != nil {
		return 0, err
	}
	return link.Attrs().Index, nil
}

// Sender transmits raw Ethernet frames on one interface of a namespace.
// Send is safe for concurrent use.
type Sender struct {
	ns     *NS
	ifname string

	mu sync.RWMutex
	fd int // -1 once closed
}

// Sender opens an AF_PACKET SOCK_RAW socket, created inside the namespace
// and bound to ifname, that only sends (it queues no received frames).
// Lab.Close closes it. Errors: no such interface, kernel errors.
func (n *NS) Sender(ifname string) (*Sender, error) {
	idx, err := n.ifindex(ifname)
	if err != nil {
		return nil, err
	}
	fd, err := n.packetSocket(0)
	if err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: idx}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lab: binding sender to %s in %s: %w", ifname, n.Name, err)
	}
	s := &Sender{ns: n, ifname: ifname, fd: fd}
	if err := n.track(s); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return s, nil
}

// Send transmits frame, a whole Ethernet frame from the destination MAC on
// (no FCS), as is: the kernel adds nothing and pads nothing. Errors: closed
// sender, a frame shorter than 14 bytes, kernel errors (ENETDOWN, EMSGSIZE
// above the MTU, ENOBUFS, ...).
func (s *Sender) Send(frame []byte) error {
	if len(frame) < 14 {
		return fmt.Errorf("lab: frame of %d bytes, want at least 14", len(frame))
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.fd < 0 {
		return errors.New("lab: sender closed")
	}
	n, err := unix.Write(s.fd, frame)
	if err != nil {
		return fmt.Errorf("lab: send on %s in %s: %w", s.ifname, s.ns.Name, err)
	}
	if n != len(frame) {
		return fmt.Errorf("lab: send on %s in %s: %d of %d bytes", s.ifname, s.ns.Name, n, len(frame))
	}
	return nil
}

// Close closes the socket; it is idempotent.
func (s *Sender) Close() error {
	s.mu.Lock()
	if s.fd < 0 {
		s.mu.Unlock()
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	s.mu.Unlock()
	s.ns.untrack(s)
	return err
}

// PacketType is how the receiving interface classified a frame
// (sockaddr_ll.sll_pkttype).
type PacketType uint8

// Packet types a Receiver reports. PACKET_OUTGOING never reaches it.
const (
	// Host: addressed to the interface's own MAC.
	Host PacketType = unix.PACKET_HOST
	// Broadcast: to ff:ff:ff:ff:ff:ff.
	Broadcast PacketType = unix.PACKET_BROADCAST
	// Multicast: to a group MAC.
	Multicast PacketType = unix.PACKET_MULTICAST
	// OtherHost: to another unicast MAC (seen by snooping, e.g. on a hub).
	OtherHost PacketType = unix.PACKET_OTHERHOST
)

func (t PacketType) String() string {
	switch t {
	case Host:
		return "host"
	case Broadcast:
		return "broadcast"
	case Multicast:
		return "multicast"
	case OtherHost:
		return "otherhost"
	}
	return fmt.Sprintf("pkttype(%d)", uint8(t))
}

// Frame is one received frame.
type Frame struct {
	// Data is the Ethernet frame from the destination MAC on, with the VLAN
	// tag the kernel strips on receive put back (as libpcap does), so it is
	// the frame on the wire. In a match function it is valid only during
	// the call.
	Data []byte
	// Type is the packet type.
	Type PacketType
}

// ReceiverStats are a receiver's socket counters since it was opened.
type ReceiverStats struct {
	// Received is the number of frames that reached the socket, the dropped
	// ones included.
	Received uint64
	// Dropped is the number of frames lost because the socket buffer was
	// full: a non-zero value makes exact counts meaningless.
	Dropped uint64
}

// Receiver reads every frame arriving on one interface of a namespace and
// hands it to its Counters. Its methods are safe for concurrent use.
type Receiver struct {
	ns     *NS
	ifname string
	f      *os.File
	rc     syscall.RawConn
	done   chan struct{} // closed when the read loop has ended

	counters atomic.Pointer[[]*Counter]

	mu       sync.Mutex
	closed   bool
	err      error // why the read loop ended, if not Close
	stats    ReceiverStats
	counterL []*Counter
}

// RecvBuffer is the socket receive buffer of a Receiver, in bytes.
const RecvBuffer = 8 << 20

// Receiver opens an AF_PACKET socket, created inside the namespace and
// bound to ifname with ETH_P_ALL, and starts reading it. It sees frames of
// types Host, Broadcast, Multicast and OtherHost (PACKET_IGNORE_OUTGOING:
// no copies of frames sent from the namespace), whether or not the
// interface is promiscuous (a veth delivers every frame). Frames that
// arrive before a Counter is made are not counted. Lab.Close closes it.
// Errors: no such interface, kernel errors.
func (n *NS) Receiver(ifname string) (*Receiver, error) {
	idx, err := n.ifindex(ifname)
	if err != nil {
		return nil, err
	}
	fd, err := n.packetSocket(unix.SOCK_NONBLOCK)
	if err != nil {
		return nil, err
	}
	fail := func(what string, err error) (*Receiver, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("lab: receiver on %s in %s: %s: %w", ifname, n.Name, what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail("PACKET_IGNORE_OUTGOING", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		return fail("PACKET_AUXDATA", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, RecvBuffer); err != nil {
		return fail("SO_RCVBUFFORCE", err)
	}
	// Bound with the protocol only now, so that it never queued frames of
	// other interfaces.
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx}); err != nil {
		return fail("bind", err)
	}
	f := os.NewFile(uintptr(fd), "packet:"+ifname) // non-blocking: uses the poller
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	r := &Receiver{ns: n, ifname: ifname, f: f, rc: rc, done: make(chan struct{})}
	if err := n.track(r); err != nil {
		f.Close()
		return nil, err
	}
	go r.loop()
	return r, nil
}

// maxFrame is the receive buffer: more than the largest veth MTU (65535)
// plus headers, and than a GRO aggregate.
const maxFrame = 1 << 17

func (r *Receiver) loop() {
	defer close(r.done)
	const tag = 4 // room to put a stripped VLAN tag back in front
	buf := make([]byte, tag+maxFrame)
	oob := make([]byte, unix.CmsgSpace(sizeofTpacketAuxdata))
	for {
		var n, oobn int
		var from unix.Sockaddr
		var rerr error
		err := r.rc.Read(func(fd uintptr) bool {
			n, oobn, _, from, rerr = unix.Recvmsg(int(fd), buf[tag:], oob, 0)
			return rerr != unix.EAGAIN
		})
		if err == nil {
			err = rerr
		}
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENETDOWN) {
			continue // ENETDOWN: the interface went down; reported once
		}
		if err != nil {
			r.mu.Lock()
			if !r.closed {
				r.err = fmt.Errorf("lab: receiver on %s in %s: %w", r.ifname, r.ns.Name, err)
			}
			r.mu.Unlock()
			return
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		data := buf[tag : tag+n]
		if tpid, tci, ok := vlanAux(oob[:oobn]); ok && n >= 12 {
			copy(buf[0:12], buf[tag:tag+12])
			binary.BigEndian.PutUint16(buf[12:], tpid)
			binary.BigEndian.PutUint16(buf[14:], tci)
			data = buf[:tag+n]
		}
		fr := Frame{Data: data, Type: PacketType(ll.Pkttype)}
		if cs := r.counters.Load(); cs != nil {
			for _, c := range *cs {
				if c.match == nil || c.match(fr) {
					c.add(fr)
				}
			}
		}
	}
}

// vlanAux returns the VLAN tag the kernel stripped, from PACKET_AUXDATA.
func vlanAux(oob []byte) (tpid, tci uint16, ok bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, 0, false
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA || len(m.Data) < sizeofTpacketAuxdata {
			continue
		}
		// struct tpacket_auxdata: status u32, len u32, snaplen u32, mac u16,
		// net u16, vlan_tci u16, vlan_tpid u16.
		status := binary.NativeEndian.Uint32(m.Data[0:])
		tci = binary.NativeEndian.Uint16(m.Data[16:])
		tpid = binary.NativeEndian.Uint16(m.Data[18:])
		if status&unix.TP_STATUS_VLAN_VALID == 0 && tci == 0 {
			return 0, 0, false
		}
		if status&unix.TP_STATUS_VLAN_TPID_VALID == 0 {
			tpid = unix.ETH_P_8021Q
		}
		return tpid, tci, true
	}
	return 0, 0, false
}

// Stats returns the socket's counters since the receiver was opened
// (cumulative; the kernel resets them on each read). After Close it returns
// the last values read.
func (r *Receiver) Stats() ReceiverStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.readStatsLocked()
	return r.stats
}

func (r *Receiver) readStatsLocked() {
	if r.closed {
		return
	}
	r.rc.Control(func(fd uintptr) {
		if st, err := unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			r.stats.Received += uint64(st.Packets)
			r.stats.Dropped += uint64(st.Drops)
		}
	})
}

// Close stops the receiver and closes its socket; waiting Counters return
// an error. It is idempotent.
func (r *Receiver) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.readStatsLocked()
	r.closed = true
	err := r.f.Close()
	r.mu.Unlock()
	<-r.done
	r.ns.untrack(r)
	return err
}

// sizeofTpacketAuxdata is sizeof(struct tpacket_auxdata).
const sizeofTpacketAuxdata = int(unsafe.Sizeof(unix.TpacketAuxdata{}))

// KeepFrames is how many matched frames a Counter keeps copies of.
const KeepFrames = 1024

// Count starts counting the frames read from now on for which match
// returns true (every frame if match is nil). match runs on the receiver's
// goroutine for every frame, so it must be quick, must not keep f.Data
// after returning, and must not call methods of the Receiver or Counter.
func (r *Receiver) Count(match func(f Frame) bool) *Counter {
	c := &Counter{r: r, match: match}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counterL = append(r.counterL, c)
	cs := append([]*Counter(nil), r.counterL...)
	r.counters.Store(&cs)
	return c
}

// Counter counts the frames of a Receiver that match a predicate. Its
// methods are safe for concurrent use.
type Counter struct {
	r     *Receiver
	match func(Frame) bool

	mu      sync.Mutex
	n       int
	kept    []Frame
	waiters []waiter
}

type waiter struct {
	n  int
	ch chan struct{}
}

func (c *Counter) add(f Frame) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	if len(c.kept) < KeepFrames {
		c.kept = append(c.kept, Frame{Data: append([]byte(nil), f.Data...), Type: f.Type})
	}
	ws := c.waiters[:0]
	for _, w := range c.waiters {
		if c.n >= w.n {
			close(w.ch)
		} else {
			ws = append(ws, w)
		}
	}
	c.waiters = ws
}

// N is the number of matching frames so far.
func (c *Counter) N() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// Frames returns copies of the first KeepFrames matching frames, in arrival
// order.
func (c *Counter) Frames() []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Frame(nil), c.kept...)
}

// Stop stops counting; N and Frames keep their values.
func (c *Counter) Stop() {
	r := c.r
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range r.counterL {
		if x == c {
			r.counterL = append(r.counterL[:i:i], r.counterL[i+1:]...)
			break
		}
	}
	cs := append([]*Counter(nil), r.counterL...)
	r.counters.Store(&cs)
}

// Wait blocks until at least n frames matched. Errors: ctx ended, or the
// receiver was closed or failed, before that; the error gives the count.
func (c *Counter) Wait(ctx context.Context, n int) error {
	c.mu.Lock()
	if c.n >= n {
		c.mu.Unlock()
		return nil
	}
	w := waiter{n: n, ch: make(chan struct{})}
	c.waiters = append(c.waiters, w)
	c.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		return c.shortErr(n, ctx.Err())
	case <-c.r.done:
		if c.N() >= n {
			return nil
		}
		c.r.mu.Lock()
		err := c.r.err
		c.r.mu.Unlock()
		if err == nil {
			err = errors.New("receiver closed")
		}
		return c.shortErr(n, err)
	}
}

func (c *Counter) shortErr(want int, err error) error {
	st := c.r.Stats()
	return fmt.Errorf("lab: %d of %d frames on %s in %s (socket received %d, dropped %d): %w",
		c.N(), want, c.r.ifname, c.r.ns.Name, st.Received, st.Dropped, err)
}

// Expect waits at most timeout for n matching frames, then settle longer,
// and checks that exactly n matched and that the socket dropped none.
// settle is how long a surplus frame has to show up (e.g. 100 ms for frames
// already sent). Errors give the count and the socket counters.
func (c *Counter) Expect(n int, timeout, settle time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.Wait(ctx, n); err != nil {
		return err
	}
	time.Sleep(settle)
	st := c.r.Stats()
	if got := c.N(); got != n || st.Dropped != 0 {
		return fmt.Errorf("lab: %d frames on %s in %s, want exactly %d (socket received %d, dropped %d)",
			got, c.r.ifname, c.r.ns.Name, n, st.Received, st.Dropped)
	}
	return nil
}

// HoldPromisc makes ifname promiscuous the way tcpdump does: an AF_PACKET
// socket inside the namespace joins PACKET_MR_PROMISC membership on it. That
// raises the interface's promiscuity counter (IFLA_PROMISCUITY,
// LinkAttrs.Promisc) by one without setting the user-visible IFF_PROMISC
// flag (LinkAttrs.RawFlags), and the kernel drops it when the socket closes,
// even if the process dies. release closes the socket; it is idempotent, and
// Lab.Close calls it. Errors: no such interface, kernel errors.
func (n *NS) HoldPromisc(ifname string) (release func() error, err error) {
	idx, err := n.ifindex(ifname)
	if err != nil {
		return nil, err
	}
	fd, err := n.packetSocket(0)
	if err != nil {
		return nil, err
	}
	mreq := unix.PacketMreq{Ifindex: int32(idx), Type: unix.PACKET_MR_PROMISC}
	if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lab: promiscuous membership on %s in %s: %w", ifname, n.Name, err)
	}
	h := &promiscHold{ns: n, fd: fd}
	if err := n.track(h); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return h.Close, nil
}

type promiscHold struct {
	ns   *NS
	once sync.Once
	fd   int
	err  error
}

func (h *promiscHold) Close() error {
	h.once.Do(func() {
		h.err = unix.Close(h.fd)
		h.ns.untrack(h)
	})
	return h.err
}
