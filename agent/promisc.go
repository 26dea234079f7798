package agent

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// promiscStateName is the pinned map under the interface's pin directory
// where the agent records that it turned promiscuity on. bpffs holds only BPF
// objects, so the record is a one-entry array map: it survives a crash of
// the agent, and the next agent (or the SIGTERM path) restores exactly the
// state that was found.
const promiscStateName = "lm_promisc"

// promiscRecord is the value of the promiscuity record.
type promiscRecord struct {
	// Owned is 1 when lanmonitor set IFF_PROMISC on Ifindex, which was
	// clear before; 0 otherwise.
	Owned   uint32
	Ifindex uint32
}

// promiscuity keeps an interface promiscuous while wanted and restores what
// it found. It works with the IFF_PROMISC flag (as `ip link set promisc`
// does), not with the promiscuity counter that packet sockets raise: a
// tcpdump holding the interface promiscuous keeps doing so whatever the agent
// does, and an IFF_PROMISC set by someone else is never cleared.
// The approach follows containernetworking/plugins' tuning plugin: save what
// was there, restore exactly that.
type promiscuity struct {
	ns    *netNS
	state *ebpf.Map
}

// openPromisc opens (or creates) the record pinned in dir.
func openPromisc(ns *netNS, dir string) (*promiscuity, error) {
	spec := &ebpf.MapSpec{
		Name: promiscStateName, Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1,
		Pinning: ebpf.PinByName,
	}
	m, err := ebpf.NewMapWithOptions(spec, ebpf.MapOptions{PinPath: dir})
	if err != nil {
		return nil, fmt.Errorf("open promiscuity record in %s: %w", dir, err)
	}
	return &promiscuity{ns: ns, state: m}, nil
}

func (p *promiscuity) record() (promiscRecord, error) {
	var r promiscRecord
	if err := p.state.Lookup(uint32(0), &r); err != nil {
		return r, fmt.Errorf("read promiscuity record: %w", err)
	}
	return r, nil
}

func (p *promiscuity) setRecord(r promiscRecord) error {
	if err := p.state.Update(uint32(0), r, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write promiscuity record: %w", err)
	}
	return nil
}

// flag reports whether IFF_PROMISC is set on ifindex (the flag as set by
// `ip link set promisc on`, not the counter raised by packet sockets).
func (p *promiscuity) flag(ifindex int) (bool, error) {
	l, err := p.ns.nl.LinkByIndex(ifindex)
	if err != nil {
		return false, fmt.Errorf("read flags of ifindex %d: %w", ifindex, err)
	}
	return l.Attrs().RawFlags&unix.IFF_PROMISC != 0, nil
}

// ensure makes ifindex promiscuous. If IFF_PROMISC was clear, the record
// says so (written before the flag, so a crash in between leaves a record
// rather than an unrecorded change); if it was already set by someone else,
// nothing changes and nothing is owned.
func (p *promiscuity) ensure(ifindex int) error {
	on, err := p.flag(ifindex)
	if err != nil {
		return err
	}
	rec, err := p.record()
	if err != nil {
		return err
	}
	owned := rec.Owned == 1 && rec.Ifindex == uint32(ifindex)
	if on {
		return nil
	}
	if !owned {
		if err := p.setRecord(promiscRecord{Owned: 1, Ifindex: uint32(ifindex)}); err != nil {
			return err
		}
	}
	l, err := p.ns.nl.LinkByIndex(ifindex)
	if err != nil {
		return fmt.Errorf("find ifindex %d: %w", ifindex, err)
	}
	if err := p.ns.nl.SetPromiscOn(l); err != nil {
		return fmt.Errorf("set promiscuous mode on %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// restore clears IFF_PROMISC if lanmonitor set it on ifindex, and forgets
// the record. An interface that is gone needs nothing.
func (p *promiscuity) restore(ifindex int) error {
	rec, err := p.record()
	if err != nil {
		return err
	}
	if rec.Owned != 1 {
		return nil
	}
	if rec.Ifindex == uint32(ifindex) {
		l, err := p.ns.nl.LinkByIndex(ifindex)
		switch {
		case err == nil:
			if err := p.ns.nl.SetPromiscOff(l); err != nil {
				return fmt.Errorf("restore promiscuous mode on %s: %w", l.Attrs().Name, err)
			}
		case !isLinkNotFound(err):
			return fmt.Errorf("find ifindex %d: %w", ifindex, err)
		}
	}
	return p.setRecord(promiscRecord{})
}

// owned reports whether the record says lanmonitor set promiscuity on ifindex.
func (p *promiscuity) owned(ifindex int) bool {
	rec, err := p.record()
	return err == nil && rec.Owned == 1 && rec.Ifindex == uint32(ifindex)
}

// close releases the map; unpin also removes the record.
func (p *promiscuity) close(unpin bool) error {
	var err error
	if unpin {
		if uerr := p.state.Unpin(); uerr != nil && !errors.Is(uerr, os.ErrNotExist) {
			err = uerr
		}
	}
	return errors.Join(err, p.state.Close())
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}
