package localcluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lanmonitor/lanmonitor/internal/lab"
)

// CreateLab creates the lab interface: the namespace LabNamespace (made
// with internal/lab: loopback up, forwarding off) and a veth whose end
// LabInterface is in the root namespace and whose peer LabPeerInterface is
// in the lab namespace. It refuses unless forwarding is off in the root
// namespace, so that no lab frame can leave the machine. The root end gets
// no address: IPv6 is disabled on it before it comes up (no link-local
// address, no autoconfiguration, no MLD or router solicitations) and it
// never answers ARP (arp_ignore=8). The peer has IPv6 disabled too, so that
// the only frames on the link are the ones a test sends.
//
// The namespace outlives this process (internal/lab keeps it bind-mounted
// at /run/netns); DeleteLab removes both.
func CreateLab() error {
	if err := lab.RootForwardingOff(); err != nil {
		return fmt.Errorf("refusing to create the lab interface %s in the root namespace: %w", LabInterface, err)
	}
	h, err := rootHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	if _, err := h.LinkByName(LabInterface); err == nil {
		return fmt.Errorf("an interface named %s exists already (run make cluster-down)", LabInterface)
	}
	if _, err := lab.RemoveStale(LabPrefix); err != nil {
		return fmt.Errorf("removing a stale lab namespace: %w", err)
	}
	l, err := lab.NewNamed(LabPrefix)
	if err != nil {
		return err
	}
	// l is deliberately never closed: closing deletes the namespace.
	ns, err := l.AddNS(LabNSName)
	if err != nil {
		return err
	}
	rootMAC, _ := net.ParseMAC(LabInterfaceMAC)
	peerMAC, _ := net.ParseMAC(LabPeerInterfaceMAC)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = LabInterface
	attrs.HardwareAddr = rootMAC
	attrs.MTU = 1500
	v := &netlink.Veth{LinkAttrs: attrs, PeerName: LabPeerInterface, PeerHardwareAddr: peerMAC, PeerTxQLen: -1,
		PeerNamespace: netlink.NsFd(ns.Handle())}
	if err := h.LinkAdd(v); err != nil {
		return fmt.Errorf("veth %s <-> %s in %s: %w", LabInterface, LabPeerInterface, ns.Name, err)
	}
	fail := func(err error) error { return errors.Join(err, DeleteLab()) }
	// Before the link comes up: nothing of the machine's IPv6 on it.
	for _, kv := range [][2]string{
		{"ipv6/conf/" + LabInterface + "/disable_ipv6", "1"},
		{"ipv4/conf/" + LabInterface + "/arp_ignore", "8"},
		{"ipv4/conf/" + LabInterface + "/forwarding", "0"},
	} {
		if err := os.WriteFile("/proc/sys/net/"+kv[0], []byte(kv[1]), 0); err != nil {
			return fail(fmt.Errorf("sysctl net/%s=%s: %w", kv[0], kv[1], err))
		}
	}
	if err := ns.SetSysctl("net.ipv6.conf."+LabPeerInterface+".disable_ipv6", "1"); err != nil {
		return fail(err)
	}
	root, err := h.LinkByName(LabInterface)
	if err != nil {
		return fail(err)
	}
	if err := h.LinkSetUp(root); err != nil {
		return fail(err)
	}
	peer, err := ns.Link(LabPeerInterface)
	if err != nil {
		return fail(err)
	}
	if err := ns.Netlink().LinkSetUp(peer); err != nil {
		return fail(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r, err1 := h.LinkByName(LabInterface)
		p, err2 := ns.Link(LabPeerInterface)
		if err := errors.Join(err1, err2); err != nil {
			return fail(err)
		}
		if r.Attrs().OperState == netlink.OperUp && p.Attrs().OperState == netlink.OperUp {
			break
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("lab veth not up after 5s (%v, %v)", r.Attrs().OperState, p.Attrs().OperState))
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Read back: no address of any family on the root end.
	addrs, err := h.AddrList(root, netlink.FAMILY_ALL)
	if err != nil {
		return fail(err)
	}
	if len(addrs) != 0 {
		return fail(fmt.Errorf("%s has addresses %v, want none", LabInterface, addrs))
	}
	return nil
}

// DeleteLab deletes the lab veth (both ends) and the lab namespace. It is
// idempotent.
func DeleteLab() error {
	var errs []error
	h, err := rootHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	if l, err := h.LinkByName(LabInterface); err == nil {
		if l.Type() != "veth" {
			return fmt.Errorf("%s is a %s, not the lab veth: not deleting it", LabInterface, l.Type())
		}
		if err := h.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", LabInterface, err))
		}
	}
	if _, err := lab.RemoveStale(LabPrefix); err != nil {
		errs = append(errs, err)
	}
	if _, err := os.Stat(LabNamespacePath); err == nil {
		errs = append(errs, fmt.Errorf("%s is still there (held by a running process?)", LabNamespacePath))
	}
	return errors.Join(errs...)
}

// LabLink returns the root end of the lab veth, as netlink sees it now.
func LabLink() (netlink.Link, error) {
	h, err := rootHandle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return h.LinkByName(LabInterface)
}

// XDPProgID returns the ID of the XDP program attached to LabInterface, 0
// for none.
func XDPProgID() (uint32, error) {
	l, err := LabLink()
	if err != nil {
		return 0, err
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		return x.ProgId, nil
	}
	return 0, nil
}

// Promiscuous reports whether IFF_PROMISC is set on LabInterface.
func Promiscuous() (bool, error) {
	l, err := LabLink()
	if err != nil {
		return false, err
	}
	return l.Attrs().RawFlags&unix.IFF_PROMISC != 0, nil
}

func htons(v uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))
}

// packetSocketIn creates an AF_PACKET socket inside the network namespace
// at nsPath ("" for the process's own), bound to ifname with protocol (0
// for a send-only socket). The thread is switched into the namespace and
// back; one that cannot be switched back is discarded.
func packetSocketIn(nsPath, ifname string, protocol uint16, setup func(fd int) error) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		var orig netns.NsHandle = -1
		if nsPath != "" {
			var err error
			if orig, err = netns.Get(); err != nil {
				runtime.UnlockOSThread()
				ch <- result{-1, err}
				return
			}
			defer orig.Close()
			target, err := netns.GetFromPath(nsPath)
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{-1, err}
				return
			}
			err = netns.Set(target)
			target.Close()
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{-1, err}
				return
			}
		}
		fd, err := func() (int, error) {
			ifi, err := net.InterfaceByName(ifname)
			if err != nil {
				return -1, err
			}
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return -1, err
			}
			if setup != nil {
				if err := setup(fd); err != nil {
					unix.Close(fd)
					return -1, err
				}
			}
			if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(protocol), Ifindex: ifi.Index}); err != nil {
				unix.Close(fd)
				return -1, err
			}
			return fd, nil
		}()
		if nsPath != "" {
			if serr := netns.Set(orig); serr != nil {
				if fd >= 0 {
					unix.Close(fd)
				}
				ch <- result{-1, fmt.Errorf("switching the thread back: %w", serr)}
				return // exits locked: the runtime discards the thread
			}
		}
		runtime.UnlockOSThread()
		ch <- result{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		return -1, fmt.Errorf("packet socket on %s in %q: %w", ifname, nsPath, r.err)
	}
	return r.fd, nil
}

// Sender sends raw frames from the lab namespace's end of the lab veth.
type Sender struct {
	mu sync.Mutex
	fd int
}

// LabSender opens a sender on LabPeerInterface in the lab namespace.
func LabSender() (*Sender, error) {
	fd, err := packetSocketIn(LabNamespacePath, LabPeerInterface, 0, nil)
	if err != nil {
		return nil, err
	}
	return &Sender{fd: fd}, nil
}

// Send transmits one whole Ethernet frame.
func (s *Sender) Send(frame []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return errors.New("sender closed")
	}
	for {
		_, err := unix.Write(s.fd, frame)
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
			time.Sleep(time.Millisecond)
			continue
		}
		return err
	}
}

// Close closes the socket.
func (s *Sender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// Receiver counts frames that reach the root namespace's end of the lab
// veth past XDP: an AF_PACKET socket bound to LabInterface sees what the
// interface hands to the stack, which is after the XDP program (a frame
// the program drops never reaches it). It does not change the
// interface's IFF_PROMISC flag.
type Receiver struct {
	fd      int
	match   func([]byte) bool
	n       atomic.Int64
	drops   atomic.Int64
	stop    atomic.Bool
	done    chan struct{}
	closeMu sync.Once
}

// RootReceiver starts counting frames on LabInterface for which match
// returns true. match runs on the receiver's goroutine.
func RootReceiver(match func(frame []byte) bool) (*Receiver, error) {
	fd, err := packetSocketIn("", LabInterface, unix.ETH_P_ALL, func(fd int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
			return err
		}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50000})
	})
	if err != nil {
		return nil, err
	}
	r := &Receiver{fd: fd, match: match, done: make(chan struct{})}
	go r.loop()
	return r, nil
}

func (r *Receiver) loop() {
	defer close(r.done)
	buf := make([]byte, 1<<16)
	for !r.stop.Load() {
		n, from, err := unix.Recvfrom(r.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if r.match(buf[:n]) {
			r.n.Add(1)
		}
	}
}

// N is the number of matching frames so far.
func (r *Receiver) N() int64 { return r.n.Load() }

// Drops is the number of frames the socket dropped (buffer full) so far,
// matching or not: a count is exact while it is 0.
func (r *Receiver) Drops() int64 {
	if !r.stop.Load() {
		if st, err := unix.GetsockoptTpacketStats(r.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			r.drops.Add(int64(st.Drops)) // the kernel resets them on each read
		}
	}
	return r.drops.Load()
}

// Close stops the receiver and closes its socket.
func (r *Receiver) Close() error {
	var err error
	r.closeMu.Do(func() {
		r.Drops()
		r.stop.Store(true)
		<-r.done
		err = unix.Close(r.fd)
	})
	return err
}

// String describes the lab for messages.
func LabDescription() string {
	return strings.Join([]string{LabInterface, "(root namespace, no address) <->", LabPeerInterface, "in", LabNamespacePath}, " ")
}
