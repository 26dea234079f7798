package lab

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// LinkTimeout bounds how long Veth and Bridge wait for an interface to be
// operationally up and for a bridge port to forward.
const LinkTimeout = 5 * time.Second

// The only address ranges the lab assigns (RFC 2544 benchmarking, RFC 3849
// documentation).
var (
	LabIPv4 = netip.MustParsePrefix("198.18.0.0/15")
	LabIPv6 = netip.MustParsePrefix("2001:db8::/32")
)

// NS is a network namespace of a lab. Its methods are safe for concurrent
// use; it is deleted by Lab.Close.
type NS struct {
	// Name is the full namespace name, e.g. "lm1f2e3d4c-node".
	Name string
	// Path is its bind mount, NetnsDir + "/" + Name, usable with
	// `nsenter --net=<Path>` or setns(2).
	Path string

	lab    *Lab
	handle netns.NsHandle // O_CLOEXEC fd holding the lab's flock; closed by close
	// nlh is never closed: a closed netlink.Handle falls back to sockets in
	// the calling thread's namespace, i.e. the root one. Its sockets (which
	// keep the emptied namespace alive) close when it is garbage-collected.
	nlh *netlink.Handle

	mu      sync.Mutex
	closed  bool
	closers map[io.Closer]struct{}
}

// newNS creates and configures the namespace name of l.
func newNS(l *Lab, name string) (*NS, error) {
	path := filepath.Join(NetnsDir, name)
	if _, err := os.Lstat(path); err == nil {
		ok, err := removeIfStale(name)
		if err != nil {
			return nil, fmt.Errorf("lab: replacing stale %s: %w", path, err)
		}
		if !ok {
			return nil, fmt.Errorf("lab: %s is in use by a running lab", path)
		}
	}
	if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	h, err := createNamed(path)
	if err != nil {
		return nil, fmt.Errorf("lab: creating namespace %s: %w", name, err)
	}
	n := &NS{Name: name, Path: path, lab: l, handle: h, closers: map[io.Closer]struct{}{}}
	if err := n.setup(); err != nil {
		return nil, errors.Join(fmt.Errorf("lab: setting up namespace %s: %w", name, err), n.close())
	}
	return n, nil
}

// setup opens the netlink handle, brings lo up and turns forwarding off.
func (n *NS) setup() error {
	nlh, err := netlink.NewHandleAt(n.handle)
	if err != nil {
		return fmt.Errorf("netlink handle: %w", err)
	}
	n.nlh = nlh
	lo, err := nlh.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := nlh.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	var off [][2]string
	for _, k := range forwardingKeys {
		off = append(off, [2]string{k, "0"})
	}
	if err := n.setSysctls(off); err != nil {
		return err
	}
	return n.ForwardingOff()
}

// createNamed creates a network namespace on a locked thread, takes the
// lab's flock on it and bind-mounts it at path before anyone can see it,
// then switches the thread back. A thread that cannot be switched back ends
// locked, so the runtime terminates it.
func createNamed(path string) (netns.NsHandle, error) {
	type result struct {
		h   netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		h, restored, err := createOnThread(path)
		if restored {
			runtime.UnlockOSThread()
		}
		ch <- result{h, err}
	}()
	r := <-ch
	return r.h, r.err
}

// createOnThread is createNamed's body; it must run on a locked thread.
// restored reports whether the thread is in its original namespace.
func createOnThread(path string) (h netns.NsHandle, restored bool, err error) {
	orig, err := netns.Get()
	if err != nil {
		return -1, true, err
	}
	defer orig.Close()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return -1, true, fmt.Errorf("unshare: %w", err)
	}
	h, err = netns.Get()
	if err == nil {
		if err = bindNamed(h, path); err != nil {
			h.Close()
			h = -1
		}
	}
	if serr := netns.Set(orig); serr != nil {
		if h >= 0 {
			err = errors.Join(err, unmountNamed(path))
			h.Close()
		}
		return -1, false, errors.Join(err, fmt.Errorf("switching the thread back: %w (thread discarded)", serr))
	}
	return h, true, err
}

// bindNamed locks the namespace h (the thread's current one) and
// bind-mounts it at path.
func bindNamed(h netns.NsHandle, path string) error {
	if err := unix.Flock(int(h), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("flock: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return fmt.Errorf("bind mount %s: %w", path, err)
	}
	return nil
}

// close releases everything the namespace holds, deletes its interfaces
// and its name; the kernel destroys it once no process or socket uses it.
func (n *NS) close() error {
	n.mu.Lock()
	n.closed = true
	closers := n.closers
	n.closers = nil
	n.mu.Unlock()
	var errs []error
	for c := range closers {
		errs = append(errs, c.Close())
	}
	if n.nlh != nil {
		errs = append(errs, n.deleteLinks())
	}
	// Unmount before releasing the flock: RemoveStale must never see our
	// namespace mounted and unlocked.
	errs = append(errs, unmountNamed(n.Path))
	n.handle.Close()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("namespace %s: %w", n.Name, err)
	}
	return nil
}

// deleteLinks deletes every interface but loopback, so that they go now
// rather than when the netlink handle is garbage-collected.
func (n *NS) deleteLinks() error {
	links, err := n.nlh.LinkList()
	if err != nil {
		return fmt.Errorf("listing links: %w", err)
	}
	var errs []error
	for _, link := range links {
		if link.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		err := n.nlh.LinkDel(link)
		var nf netlink.LinkNotFoundError
		if err != nil && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.ENOENT) && !errors.As(err, &nf) {
			errs = append(errs, fmt.Errorf("deleting %s: %w", link.Attrs().Name, err)) // a veth's peer went with it
		}
	}
	return errors.Join(errs...)
}

// live returns an error once the namespace is closed.
func (n *NS) live() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return fmt.Errorf("lab: namespace %s is closed", n.Name)
	}
	return nil
}

// dupHandle returns a duplicate of the namespace fd, which the caller
// closes, so that a concurrent close cannot make a recycled fd number point
// elsewhere. Errors once the namespace is closed.
func (n *NS) dupHandle() (netns.NsHandle, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return -1, fmt.Errorf("lab: namespace %s is closed", n.Name)
	}
	fd, err := unix.FcntlInt(uintptr(n.handle), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("lab: dup namespace fd: %w", err)
	}
	return netns.NsHandle(fd), nil
}

// track registers c to be closed with the namespace.
func (n *NS) track(c io.Closer) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return fmt.Errorf("lab: namespace %s is closed", n.Name)
	}
	n.closers[c] = struct{}{}
	return nil
}

func (n *NS) untrack(c io.Closer) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.closers, c)
}

// Handle is an open file descriptor of the namespace, for setns(2) or
// netlink.NsFd. The NS owns it: do not close it. It is valid until
// Lab.Close, after which its number may name another file: use Do to run
// code in the namespace.
func (n *NS) Handle() netns.NsHandle { return n.handle }

// Netlink is a netlink handle whose sockets live in the namespace, so it
// lists and changes the namespace's links, addresses and routes from any
// thread. The NS owns it: do not close it (a closed netlink.Handle silently
// works in the calling thread's namespace, the root one). After Lab.Close
// it still works in the deleted, emptied namespace, never in another one;
// the namespace is freed when the handle is garbage-collected.
func (n *NS) Netlink() *netlink.Handle { return n.nlh }

// Do runs fn on an OS thread switched into the namespace and returns its
// error. The thread is locked for fn and switched back afterwards; if that
// fails the thread is discarded (its goroutine exits locked) and Do returns
// an error. fn runs on another goroutine than the caller: goroutines it
// starts, and anything it hands to other goroutines, run in the caller's
// namespace, and it must not call t.FailNow (use the returned error). A
// panic in fn is re-raised in the caller.
func (n *NS) Do(fn func() error) error {
	h, err := n.dupHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	return doIn(h, fn)
}

func doIn(target netns.NsHandle, fn func() error) error {
	type result struct {
		err      error
		panicked bool
		pv       any
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		sent := false
		defer func() {
			if !sent { // runtime.Goexit in fn: the thread stays locked and dies
				ch <- result{err: errors.New("lab: fn called runtime.Goexit inside Do (t.FailNow?)")}
			}
		}()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			sent = true
			ch <- result{err: fmt.Errorf("lab: current namespace: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread() // setns failed: the thread did not move
			sent = true
			ch <- result{err: fmt.Errorf("lab: setns: %w", err)}
			return
		}
		var r result
		func() {
			defer func() {
				if p := recover(); p != nil {
					r.panicked, r.pv = true, p
				}
			}()
			r.err = fn()
		}()
		if err := netns.Set(orig); err != nil {
			r.err = errors.Join(r.err, fmt.Errorf("lab: switching the thread back: %w (thread discarded)", err))
			sent = true
			ch <- r
			return // still locked: the runtime terminates the thread
		}
		runtime.UnlockOSThread()
		sent = true
		ch <- r
	}()
	r := <-ch
	if r.panicked {
		panic(r.pv)
	}
	return r.err
}

// inProcessNS runs fn on a locked thread that is checked to be in the
// network namespace of the process (of its main thread), for reading the
// root namespace. A thread found elsewhere is discarded.
func inProcessNS(fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		var self, thread unix.Stat_t
		if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
			runtime.UnlockOSThread()
			ch <- err
			return
		}
		if err := unix.Stat("/proc/thread-self/ns/net", &thread); err != nil {
			runtime.UnlockOSThread()
			ch <- err
			return
		}
		if self.Dev != thread.Dev || self.Ino != thread.Ino {
			ch <- errors.New("lab: a Go thread is not in the process's network namespace (thread discarded)")
			return // exit locked
		}
		err := fn()
		runtime.UnlockOSThread()
		ch <- err
	}()
	return <-ch
}

// Link returns the interface ifname of the namespace. Errors: no such link
// (netlink.LinkNotFoundError).
func (n *NS) Link(ifname string) (netlink.Link, error) {
	if err := n.live(); err != nil {
		return nil, err
	}
	l, err := n.nlh.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("lab: link %s in %s: %w", ifname, n.Name, err)
	}
	return l, nil
}

// AddAddr assigns prefix (address and prefix length, e.g. 198.18.0.1/24 or
// 2001:db8::1/64) to ifname. IPv6 addresses get IFA_F_NODAD, so they are
// usable at once instead of after duplicate address detection (about 1 s).
// Errors: the address is outside LabIPv4/LabIPv6 or its prefix is shorter
// than theirs, no such link, kernel errors (e.g. EEXIST).
func (n *NS) AddAddr(ifname string, prefix netip.Prefix) error {
	if err := checkLabPrefix(prefix); err != nil {
		return err
	}
	link, err := n.Link(ifname)
	if err != nil {
		return err
	}
	a := prefix.Addr()
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(prefix.Bits(), a.BitLen())}}
	if a.Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := n.nlh.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("lab: adding %v to %s in %s: %w", prefix, ifname, n.Name, err)
	}
	return nil
}

func checkLabPrefix(p netip.Prefix) error {
	if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return fmt.Errorf("lab: address %v: want a plain IPv4 or IPv6 prefix", p)
	}
	allowed := LabIPv4
	if p.Addr().Is6() {
		allowed = LabIPv6
	}
	if !allowed.Contains(p.Addr()) || p.Bits() < allowed.Bits() {
		return fmt.Errorf("lab: address %v is outside %v: the lab uses only %v and %v", p, allowed, LabIPv4, LabIPv6)
	}
	return nil
}

// VethOptions configures a veth pair. Zero values keep kernel defaults.
type VethOptions struct {
	// MTU of both ends in bytes (L3, as `ip link` shows it); 0 = 1500.
	MTU int
	// MACA and MACB are the unicast MAC addresses of the two ends; nil =
	// random (locally administered) chosen by the kernel.
	MACA, MACB net.HardwareAddr
	// Queues is the number of RX and TX queues of each end; 0 = 1.
	Queues int
}

// Veth creates a veth pair aName (in a) <-> bName (in b), a and b being
// namespaces of l (they may be the same one), brings both ends up and
// waits, at most LinkTimeout, until both are operationally up and can
// transmit. Interface names are at most 15 bytes. The pair is created by a
// netlink socket in a with the peer placed straight into b, so it never
// exists in the root namespace. Errors: foreign or closed namespaces,
// invalid names or MACs, kernel errors (EEXIST, ...), timeout.
func (l *Lab) Veth(a *NS, aName string, b *NS, bName string, opt VethOptions) error {
	if a == nil || b == nil || a.lab != l || b.lab != l {
		return errors.New("lab: veth ends must be namespaces of this lab")
	}
	if err := errors.Join(checkIfname(aName), checkIfname(bName), checkMAC(opt.MACA), checkMAC(opt.MACB)); err != nil {
		return err
	}
	if a == b && aName == bName {
		return fmt.Errorf("lab: veth ends have one name %s", aName)
	}
	if opt.MTU < 0 || opt.Queues < 0 {
		return fmt.Errorf("lab: veth %s: negative MTU or queue count", aName)
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = aName
	attrs.MTU = opt.MTU
	attrs.HardwareAddr = opt.MACA
	attrs.NumTxQueues, attrs.NumRxQueues = opt.Queues, opt.Queues
	v := &netlink.Veth{LinkAttrs: attrs, PeerName: bName, PeerHardwareAddr: opt.MACB, PeerTxQLen: -1}
	if err := a.live(); err != nil {
		return err
	}
	if b != a {
		bh, err := b.dupHandle()
		if err != nil {
			return err
		}
		defer bh.Close()
		v.PeerNamespace = netlink.NsFd(bh)
	}
	if err := a.nlh.LinkAdd(v); err != nil {
		return fmt.Errorf("lab: veth %s(%s) <-> %s(%s): %w", aName, a.Name, bName, b.Name, err)
	}
	err := func() error {
		for _, end := range []struct {
			n    *NS
			name string
		}{{a, aName}, {b, bName}} {
			link, err := end.n.Link(end.name)
			if err != nil {
				return err
			}
			if err := end.n.nlh.LinkSetUp(link); err != nil {
				return fmt.Errorf("lab: %s up in %s: %w", end.name, end.n.Name, err)
			}
		}
		return errors.Join(a.waitOperUp(aName), b.waitOperUp(bName))
	}()
	if err != nil {
		if link, lerr := a.nlh.LinkByName(aName); lerr == nil {
			err = errors.Join(err, a.nlh.LinkDel(link)) // deletes the peer too
		}
		return err
	}
	return nil
}

// waitOperUp waits until ifname is operationally up. The kernel sets the
// operstate of the veth end that got its carrier from its peer in linkwatch
// work, and activates its qdisc (until then a frame sent on it is dropped
// silently) right after, under the same RTNL hold; a second "link up"
// request, which takes RTNL, returns only after that work has finished.
func (n *NS) waitOperUp(ifname string) error {
	deadline := time.Now().Add(LinkTimeout)
	for {
		link, err := n.Link(ifname)
		if err != nil {
			return err
		}
		if st := link.Attrs().OperState; st == netlink.OperUp {
			if err := n.nlh.LinkSetUp(link); err != nil { // RTNL barrier, a no-op change
				return fmt.Errorf("lab: %s up in %s: %w", ifname, n.Name, err)
			}
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("lab: %s in %s is %v after %v, want up", ifname, n.Name, st, LinkTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// Bridge creates the bridge name in the namespace (STP off), brings it up,
// enslaves ports (interfaces of the namespace) and brings them up, then
// waits, at most LinkTimeout, until every port forwards. With hub, the
// ageing time is 0, so no MAC is remembered and every frame is flooded to
// every other port (other hosts' unicast reaches each port: "snooped"
// traffic), and multicast snooping is off, so multicast floods too.
// br_netfilter, when the kernel has it, is turned off in the namespace
// (net.bridge.bridge-nf-call-{arp,ip,ip6}tables=0): it would drop bridged
// IPv4 frames with a zero or bad header checksum, or a malformed header,
// instead of forwarding them as a switch does.
// Errors: invalid name, no such port, kernel errors, timeout.
func (n *NS) Bridge(name string, hub bool, ports ...string) error {
	if err := errors.Join(checkIfname(name), n.live()); err != nil {
		return err
	}
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	br := &netlink.Bridge{LinkAttrs: attrs}
	if hub {
		ageing, snooping := uint32(0), false
		br.AgeingTime, br.MulticastSnooping = &ageing, &snooping
	}
	if err := n.nlh.LinkAdd(br); err != nil {
		return fmt.Errorf("lab: bridge %s in %s: %w", name, n.Name, err)
	}
	err := func() error {
		if err := n.bridgeNetfilterOff(); err != nil {
			return err
		}
		brLink, err := n.Link(name)
		if err != nil {
			return err
		}
		if err := n.nlh.LinkSetUp(brLink); err != nil {
			return fmt.Errorf("lab: %s up in %s: %w", name, n.Name, err)
		}
		indexes := map[int32]string{}
		for _, p := range ports {
			link, err := n.Link(p)
			if err != nil {
				return err
			}
			if err := n.nlh.LinkSetMasterByIndex(link, brLink.Attrs().Index); err != nil {
				return fmt.Errorf("lab: enslaving %s to %s in %s: %w", p, name, n.Name, err)
			}
			if err := n.nlh.LinkSetUp(link); err != nil {
				return fmt.Errorf("lab: %s up in %s: %w", p, n.Name, err)
			}
			indexes[int32(link.Attrs().Index)] = p
		}
		return n.waitForwarding(indexes)
	}()
	if err != nil {
		if link, lerr := n.nlh.LinkByName(name); lerr == nil {
			err = errors.Join(err, n.nlh.LinkDel(link))
		}
		return err
	}
	return nil
}

// bridgeNetfilterOff turns br_netfilter off in the namespace, if the
// kernel has it: it is on by default in every namespace and passes bridged
// IPv4 frames through header validation, which drops frames with a bad IPv4
// checksum (frames.Build leaves it zero) or a malformed header instead of
// flooding them.
func (n *NS) bridgeNetfilterOff() error {
	var kvs [][2]string
	for _, k := range []string{"arptables", "iptables", "ip6tables"} {
		kvs = append(kvs, [2]string{"net.bridge.bridge-nf-call-" + k, "0"})
	}
	present := false
	if err := n.Do(func() error {
		_, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables")
		present = err == nil
		return nil
	}); err != nil {
		return err
	}
	if !present {
		return nil
	}
	return n.setSysctls(kvs)
}

// brStateForwarding is BR_STATE_FORWARDING (linux/if_bridge.h).
const brStateForwarding = 3

// waitForwarding waits until the bridge ports (ifindex -> name) forward.
func (n *NS) waitForwarding(ports map[int32]string) error {
	deadline := time.Now().Add(LinkTimeout)
	for {
		states, err := n.bridgePortStates()
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return fmt.Errorf("lab: bridge port states in %s: %w", n.Name, err)
		}
		var waiting []string
		for idx, name := range ports {
			if st, ok := states[idx]; !ok || st != brStateForwarding || err != nil {
				waiting = append(waiting, fmt.Sprintf("%s (state %d)", name, st))
			}
		}
		if len(waiting) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: bridge ports %s in %s not forwarding after %v", strings.Join(waiting, ", "), n.Name, LinkTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// bridgePortStates dumps IFLA_BRPORT_STATE of every bridge port (the
// netlink package does not parse it).
func (n *NS) bridgePortStates() (map[int32]uint8, error) {
	states := map[int32]uint8{}
	err := n.Do(func() error {
		req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
		req.AddData(nl.NewIfInfomsg(unix.AF_BRIDGE))
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
		for _, m := range msgs {
			ifi := nl.DeserializeIfInfomsg(m)
			attrs, perr := nl.ParseRouteAttr(m[ifi.Len():])
			if perr != nil {
				return perr
			}
			for _, a := range attrs {
				if a.Attr.Type&^unix.NLA_F_NESTED != unix.IFLA_PROTINFO {
					continue
				}
				infos, perr := nl.ParseRouteAttr(a.Value)
				if perr != nil {
					return perr
				}
				for _, in := range infos {
					if in.Attr.Type == nl.IFLA_BRPORT_STATE && len(in.Value) > 0 {
						states[ifi.Index] = in.Value[0]
					}
				}
			}
		}
		return err
	})
	return states, err
}

// checkIfname checks a Linux interface name: 1 to 15 bytes, no '/', ':' or
// white space, not "." or "..".
func checkIfname(s string) error {
	if len(s) == 0 || len(s) > unix.IFNAMSIZ-1 || s == "." || s == ".." || strings.ContainsAny(s, "/: \t\n\r\v\f") {
		return fmt.Errorf("lab: interface name %q: want 1 to %d bytes without '/', ':' or spaces", s, unix.IFNAMSIZ-1)
	}
	return nil
}

// checkMAC accepts nil or a non-zero unicast 48-bit MAC address.
func checkMAC(m net.HardwareAddr) error {
	if m == nil {
		return nil
	}
	if len(m) != 6 || m[0]&1 != 0 || string(m) == "\x00\x00\x00\x00\x00\x00" {
		return fmt.Errorf("lab: MAC %v: want a non-zero unicast 48-bit address", m)
	}
	return nil
}
