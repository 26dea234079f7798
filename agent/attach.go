package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// linkPinName is the XDP link's pin in the interface's pin directory.
const linkPinName = "link"

// ErrBusy means another XDP program, not lanmonitor's, is attached to the
// interface. lanmonitor never detaches or replaces it.
var ErrBusy = errors.New("another XDP program is attached to the interface")

// isBusy tells the kernel's "already attached" answers apart by value: a
// program (or link) in the same mode gives EBUSY, one in the other mode
// gives EEXIST ("Native and generic XDP can't be active at the same time").
func isBusy(err error) bool {
	return errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST)
}

// attachment is lanmonitor's XDP link on one interface.
type attachment struct {
	link    link.Link
	ifindex int
	mode    XDPMode // the mode in use: Native or Generic
	reason  string  // why that mode, for Auto
	adopted bool    // taken over from a pinned link of an earlier run
}

// adoptLink loads the link pinned in dir. It returns (nil, nil) when there is
// none, and unpins (and returns nil for) a pinned link that is no longer
// attached to ifindex: its interface was deleted, and the kernel already
// detached it.
func adoptLink(dir string, ifindex int) (link.Link, error) {
	path := filepath.Join(dir, linkPinName)
	l, err := link.LoadPinnedLink(path, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load pinned xdp link %s: %w", path, err)
	}
	info, err := l.Info()
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("inspect pinned xdp link %s: %w", path, err)
	}
	if xdp := info.XDP(); info.Type != link.XDPType || xdp == nil || int(xdp.Ifindex) != ifindex {
		// Defunct (ifindex 0) or for another interface that had this
		// name: not ours to keep.
		err := errors.Join(l.Unpin(), l.Close())
		if err != nil {
			return nil, fmt.Errorf("drop stale xdp link %s: %w", path, err)
		}
		return nil, nil
	}
	return l, nil
}

// attachXDP attaches prog to ifindex in ns, or adopts lanmonitor's pinned
// link there and swaps its program atomically (link update: no moment
// without a program). mode Auto tries native, then generic, and says why;
// Native and Generic try only that mode. Another program on the interface
// gives an error wrapping ErrBusy, and nothing is changed.
func attachXDP(ns *netNS, dir string, ifindex int, prog *ebpf.Program, mode XDPMode) (*attachment, error) {
	old, err := adoptLink(dir, ifindex)
	if err != nil {
		return nil, err
	}
	if old != nil {
		inUse, err := xdpModeInUse(ns, ifindex)
		if err == nil && (mode == XDPModeAuto || mode == inUse) {
			if err := old.Update(prog); err != nil {
				old.Close()
				return nil, fmt.Errorf("replace program of pinned xdp link: %w", err)
			}
			return &attachment{link: old, ifindex: ifindex, mode: inUse, reason: "adopted the pinned link of an earlier run", adopted: true}, nil
		}
		// Another mode is wanted: the kernel allows one mode at a time,
		// so the old link goes before the new one comes.
		if err := errors.Join(old.Unpin(), old.Close()); err != nil {
			return nil, fmt.Errorf("detach pinned xdp link to change mode: %w", err)
		}
	}

	try := func(flags link.XDPAttachFlags) (link.Link, error) {
		var l link.Link
		err := ns.do(func() error {
			var err error
			l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: flags})
			return err
		})
		return l, err
	}
	a := &attachment{ifindex: ifindex}
	switch mode {
	case XDPModeNative:
		a.link, err = try(link.XDPDriverMode)
		a.mode, a.reason = XDPModeNative, "native mode requested"
	case XDPModeGeneric:
		a.link, err = try(link.XDPGenericMode)
		a.mode, a.reason = XDPModeGeneric, "generic mode requested"
	default:
		a.link, err = try(link.XDPDriverMode)
		a.mode, a.reason = XDPModeNative, "native mode supported by the driver"
		if err != nil && !isBusy(err) {
			nativeErr := err
			a.link, err = try(link.XDPGenericMode)
			a.mode, a.reason = XDPModeGeneric, fmt.Sprintf("native mode refused (%v), fell back to generic", nativeErr)
		}
	}
	if err != nil {
		if isBusy(err) {
			return nil, fmt.Errorf("attach xdp to ifindex %d: %w (%w)", ifindex, ErrBusy, err)
		}
		return nil, fmt.Errorf("attach xdp to ifindex %d in %s mode: %w", ifindex, a.mode, err)
	}
	if err := a.link.Pin(filepath.Join(dir, linkPinName)); err != nil {
		a.link.Close()
		return nil, fmt.Errorf("pin xdp link: %w", err)
	}
	// Report what the kernel shows, not what was asked for.
	if inUse, err := xdpModeInUse(ns, ifindex); err == nil && inUse != a.mode {
		a.reason = fmt.Sprintf("%s (kernel reports %s)", a.reason, inUse)
		a.mode = inUse
	}
	return a, nil
}

// xdpModeInUse asks the kernel in which mode an XDP program is attached to
// ifindex.
func xdpModeInUse(ns *netNS, ifindex int) (XDPMode, error) {
	l, err := ns.nl.LinkByIndex(ifindex)
	if err != nil {
		return "", err
	}
	x := l.Attrs().Xdp
	if x == nil || !x.Attached {
		return "", fmt.Errorf("no xdp program attached to ifindex %d", ifindex)
	}
	switch x.AttachMode {
	case nl.XDP_ATTACHED_DRV:
		return XDPModeNative, nil
	case nl.XDP_ATTACHED_SKB:
		return XDPModeGeneric, nil
	}
	return "", fmt.Errorf("xdp attach mode %d on ifindex %d", x.AttachMode, ifindex)
}

// xdpProgramID is the ID of the XDP program attached to ifindex, or 0.
func xdpProgramID(ns *netNS, ifindex int) uint32 {
	l, err := ns.nl.LinkByIndex(ifindex)
	if err != nil || l.Attrs().Xdp == nil {
		return 0
	}
	return l.Attrs().Xdp.ProgId
}

// detach removes lanmonitor's link (the kernel detaches the program) and
// its pin.
func (a *attachment) detach() error {
	err := a.link.Unpin()
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return errors.Join(err, a.link.Close())
}
