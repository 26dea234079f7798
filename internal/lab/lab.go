// Package lab builds lab LANs out of network namespaces for tests,
// benchmarks and the demo: namespaces joined by veth pairs or by a bridge
// inside a namespace, raw-frame senders and receivers, packet-socket
// promiscuity holders and processes that run inside a namespace.
//
// Safety rules the package keeps, whatever the caller asks:
//
//   - Every interface it creates lives in a namespace it created. A veth is
//     added by a netlink socket in the first end's namespace with the peer
//     placed directly in the second end's namespace, so neither end ever
//     exists in the machine's (root) network namespace. Close deletes the
//     lab's interfaces, then its namespaces; the lab never moves a physical
//     device in, the only kind the kernel would move back to the root
//     namespace. No netlink handle of the lab is ever closed, because a
//     closed netlink.Handle silently falls back to the root namespace.
//   - Nothing in the root network namespace is changed: it is only read
//     (RootForwardingOff, and an identity check in SetSysctl).
//   - IP forwarding is off (ipv4 ip_forward and conf/{all,default}, ipv6
//     conf/{all,default}) in every namespace it creates, set explicitly and
//     read back.
//   - AddAddr accepts only 198.18.0.0/15 and 2001:db8::/32.
//   - Namespaces are named "lm" + 8 random hex digits + "-" + name (or a
//     caller's prefix, see NewNamed), so a new run never collides with the
//     leftovers of a crashed one. A live lab holds an exclusive flock(2) on
//     each of its namespaces; RemoveStale deletes the namespaces nobody
//     holds, which New does on every call for its own naming pattern.
//
// A LAN of a node and a host, and one frame from the host to the node:
//
//	l := lab.New(t) // deleted by t.Cleanup
//	node, err := l.AddNS("node")
//	host, err := l.AddNS("host")
//	err = l.Veth(node, "lan0", host, "eth0", lab.VethOptions{MACA: nodeMAC, MACB: hostMAC})
//	err = node.AddAddr("lan0", netip.MustParsePrefix("198.18.0.1/24"))
//	r, err := node.Receiver("lan0")
//	c := r.Count(func(f lab.Frame) bool { return f.Type == lab.Host && bytes.Equal(f.Data, frame) })
//	s, err := host.Sender("eth0")
//	err = s.Send(frame) // e.g. from frames.Build
//	err = c.Expect(1, 5*time.Second, 100*time.Millisecond)
//
// Count with a predicate that picks your frames: a link that comes up sends
// IPv6 traffic of its own (MLD reports, router and neighbour solicitations).
// A bridge made with hub=true floods everything, so every node sees the
// other hosts' unicast (PacketType OtherHost).
//
// Threads: work inside a namespace (NS.Do) runs on a fresh goroutine locked
// to its OS thread that is switched into the namespace and back; a thread
// that cannot be switched back is never returned to the scheduler (the
// goroutine exits still locked, so the runtime terminates the thread).
// Sockets (Sender, Receiver, HoldPromisc, the netlink handle) are created
// inside the namespace and stay bound to it on any thread.
package lab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lanmonitor/lanmonitor/internal/privileged"
)

// NetnsDir is where named network namespaces are bind-mounted, as iproute2
// does (`ip netns list` shows the lab's namespaces).
const NetnsDir = "/run/netns"

// randomPrefix matches the names New generates: "lm", 8 hex digits, "-".
var randomPrefix = regexp.MustCompile(`^lm[0-9a-f]{8}-`)

// validPrefix is what NewNamed accepts.
var validPrefix = regexp.MustCompile(`^lm[A-Za-z0-9_-]{0,30}$`)

// validNSName is what AddNS accepts.
var validNSName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// Lab is a set of network namespaces created and deleted together. Its
// methods are safe for concurrent use.
type Lab struct {
	prefix string

	mu     sync.Mutex
	nss    []*NS
	closed bool
}

// New creates an empty lab for a test or benchmark and registers Close with
// t.Cleanup, so its namespaces are deleted even when the test fails. It calls
// privileged.Require first (skipping or failing t without root), removes
// namespaces left by crashed runs (see RemoveStale) and fails t if it cannot
// work.
func New(t testing.TB) *Lab {
	t.Helper()
	privileged.Require(t)
	if removed, err := RemoveStale(""); err != nil {
		t.Logf("lab: removing stale namespaces: %v", err)
	} else if len(removed) > 0 {
		t.Logf("lab: removed stale namespaces of crashed runs: %v", removed)
	}
	l, err := NewNamed("")
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab: close: %v", err)
		}
	})
	return l
}

// NewNamed creates an empty lab for users without a testing.TB, such as the
// demo; the caller must Close it. Its namespaces are named prefix + name.
// An empty prefix picks a random one ("lm" + 8 hex digits + "-"); otherwise
// prefix must match ^lm[A-Za-z0-9_-]{0,30}$, e.g. "lmdemo-", so that
// `ip netns exec lmdemo-node1 ...` is easy to type. With a fixed prefix a
// namespace of the same name left by a crashed run is replaced, and one held
// by a running lab makes AddNS fail. Errors: not root, invalid prefix.
func NewNamed(prefix string) (*Lab, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("lab: needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN)")
	}
	if prefix == "" {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("lab: random id: %w", err)
		}
		prefix = "lm" + hex.EncodeToString(b[:]) + "-"
	} else if !validPrefix.MatchString(prefix) {
		return nil, fmt.Errorf("lab: prefix %q: want ^lm[A-Za-z0-9_-]{0,30}$", prefix)
	}
	return &Lab{prefix: prefix}, nil
}

// Prefix is the prefix of every namespace name of the lab, e.g.
// "lm1f2e3d4c-".
func (l *Lab) Prefix() string { return l.prefix }

// Namespaces returns the lab's namespaces in creation order.
func (l *Lab) Namespaces() []*NS {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*NS(nil), l.nss...)
}

// AddNS creates the network namespace Prefix()+name, bind-mounted at
// NetnsDir/Prefix()+name, with loopback up and IP forwarding off (checked).
// name must match ^[A-Za-z0-9_-]{1,32}$ and be new in the lab. Errors: the
// lab is closed, invalid or duplicate name, the name is held by another
// running lab, kernel errors.
func (l *Lab) AddNS(name string) (*NS, error) {
	if !validNSName.MatchString(name) {
		return nil, fmt.Errorf("lab: namespace name %q: want ^[A-Za-z0-9_-]{1,32}$", name)
	}
	full := l.prefix + name
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("lab: closed")
	}
	for _, n := range l.nss {
		if n.Name == full {
			return nil, fmt.Errorf("lab: namespace %s exists", full)
		}
	}
	n, err := newNS(l, full)
	if err != nil {
		return nil, err
	}
	l.nss = append(l.nss, n)
	return n, nil
}

// Close deletes every namespace of the lab, newest first: it closes the
// senders, receivers and promiscuity holders made through the namespace,
// deletes its interfaces (but loopback) and removes its name. Processes still running in a
// namespace (see NS.Command) keep it alive until they exit. Close is
// idempotent; errors of all namespaces are joined.
func (l *Lab) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	for i := len(l.nss) - 1; i >= 0; i-- {
		errs = append(errs, l.nss[i].close())
	}
	l.nss = nil
	return errors.Join(errs...)
}

// RemoveStale deletes the namespaces in NetnsDir whose names start with
// prefix and that no running lab holds (their lab's process died without
// Close). An empty prefix means the names New generates ("lm" + 8 hex
// digits + "-"); any other prefix must start with "lm". It returns the names
// it deleted. Namespaces held by a running lab, in this process or another,
// are left alone.
func RemoveStale(prefix string) ([]string, error) {
	if prefix != "" && !strings.HasPrefix(prefix, "lm") {
		return nil, fmt.Errorf("lab: stale prefix %q does not start with lm", prefix)
	}
	entries, err := os.ReadDir(NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if prefix == "" && !randomPrefix.MatchString(name) || prefix != "" && !strings.HasPrefix(name, prefix) {
			continue
		}
		ok, err := removeIfStale(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
		if ok {
			removed = append(removed, name)
		}
	}
	return removed, errors.Join(errs...)
}

// removeIfStale deletes NetnsDir/name if no lab holds its flock. A file that
// is not (yet) a namespace bind mount is removed only when older than a
// minute: a lab may be between creating and mounting it.
func removeIfStale(name string) (bool, error) {
	path := filepath.Join(NetnsDir, name)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return false, err
	}
	if fs.Type != unix.NSFS_MAGIC {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return false, err
		}
		if time.Since(time.Unix(st.Mtim.Unix())) < time.Minute {
			return false, nil
		}
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, nil // a running lab holds it
		}
		return false, err
	}
	return true, unmountNamed(path)
}

// unmountNamed removes a namespace bind mount and its mount point.
func unmountNamed(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) { // EINVAL: not mounted
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
