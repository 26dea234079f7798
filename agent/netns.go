package agent

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// netNS is the network namespace an interface lives in: the agent's own, or
// another one given by path (a lab node, or a host namespace seen from a
// container). Netlink calls go through a handle opened in it; calls that act
// on the calling thread's namespace (attaching XDP by ifindex) run inside do.
type netNS struct {
	path   string
	handle netns.NsHandle // netns.None() for the agent's own namespace
	nl     *netlink.Handle
}

// openNetNS opens the namespace at path ("" for the current one).
func openNetNS(path string) (*netNS, error) {
	n := &netNS{path: path, handle: netns.None()}
	if path != "" {
		h, err := netns.GetFromPath(path)
		if err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", path, err)
		}
		n.handle = h
	}
	nl, err := netlink.NewHandleAt(n.handle)
	if err != nil {
		n.close()
		return nil, fmt.Errorf("netlink in %s: %w", n, err)
	}
	n.nl = nl
	return n, nil
}

func (n *netNS) String() string {
	if n.path == "" {
		return "the agent's network namespace"
	}
	return "network namespace " + n.path
}

func (n *netNS) close() {
	if n.nl != nil {
		n.nl.Close()
	}
	if n.handle.IsOpen() {
		n.handle.Close()
	}
}

// do runs fn on an OS thread switched into the namespace. If the thread
// cannot be switched back, it stays locked, so the Go runtime ends it rather
// than reuse it in the wrong namespace.
func (n *netNS) do(fn func() error) error {
	if n.path == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.handle); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter %s: %w", n, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave %s: %w", n, err))
			return // thread stays locked: the runtime terminates it
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
