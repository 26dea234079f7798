package lab

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// sysctlPath maps a sysctl key to its /proc/sys file, as sysctl(8) does:
// "net.ipv4.conf.eth0/100.forwarding" and "net/ipv4/conf/eth0.100/forwarding"
// both name /proc/sys/net/ipv4/conf/eth0.100/forwarding. Only net.* keys are
// accepted: the others are not per network namespace.
func sysctlPath(key string) (string, error) {
	k := key
	if i := strings.IndexAny(k, "./"); i >= 0 && k[i] == '.' {
		k = strings.Map(func(r rune) rune {
			switch r {
			case '.':
				return '/'
			case '/':
				return '.'
			}
			return r
		}, k)
	}
	parts := strings.Split(k, "/")
	if len(parts) < 2 || parts[0] != "net" {
		return "", fmt.Errorf("lab: sysctl %q: only net.* sysctls are per network namespace", key)
	}
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return "", fmt.Errorf("lab: sysctl %q: invalid key", key)
		}
	}
	return "/proc/sys/" + k, nil
}

// SetSysctl writes value to the net.* sysctl key (sysctl(8) syntax, e.g.
// "net.ipv6.conf.lan0.accept_ra" or "net/ipv4/conf/eth0.100/rp_filter")
// inside the namespace. A sysctl that the kernel shares with the root
// namespace is refused rather than changed for the whole machine: the file
// is also opened, without reading or writing it, from the root namespace,
// and the write is refused when both opens yield one file. Errors: a key
// outside net.*, a shared sysctl, kernel errors (ENOENT, EINVAL, ...).
func (n *NS) SetSysctl(key, value string) error {
	return n.setSysctls([][2]string{{key, value}})
}

// setSysctls writes several key/value pairs with one namespace switch.
func (n *NS) setSysctls(kvs [][2]string) error {
	paths := make([]string, len(kvs))
	rootFds := make([]int, len(kvs))
	for i, kv := range kvs {
		p, err := sysctlPath(kv[0])
		if err != nil {
			return err
		}
		paths[i], rootFds[i] = p, -1
	}
	defer func() {
		for _, fd := range rootFds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}()
	// O_PATH: no permission check, nothing read or written. Keeping the
	// files open pins them, so a shared sysctl resolves to the same inode
	// in the namespace below; a per-namespace one never does.
	err := inProcessNS(func() error {
		for i, p := range paths {
			fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
			if errors.Is(err, unix.ENOENT) {
				continue // only exists in lab namespaces, e.g. a lab interface
			}
			if err != nil {
				return fmt.Errorf("lab: sysctl %s in the root namespace: %w", kvs[i][0], err)
			}
			rootFds[i] = fd
		}
		return nil
	})
	if err != nil {
		return err
	}
	return n.Do(func() error {
		for i, p := range paths {
			if err := writeSysctl(p, kvs[i][1], rootFds[i]); err != nil {
				return fmt.Errorf("lab: sysctl %s=%s in %s: %w", kvs[i][0], kvs[i][1], n.Name, err)
			}
		}
		return nil
	})
}

// writeSysctl writes value to path unless it is the file rootFd refers to.
func writeSysctl(path, value string, rootFd int) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if rootFd >= 0 {
		var in, root unix.Stat_t
		if err := errors.Join(unix.Fstat(fd, &in), unix.Fstat(rootFd, &root)); err != nil {
			return err
		}
		if in.Dev == root.Dev && in.Ino == root.Ino {
			return errors.New("shared with the root namespace, refusing to change the machine's value")
		}
	}
	nw, err := unix.Write(fd, []byte(value))
	if err != nil {
		return err
	}
	if nw != len(value) {
		return fmt.Errorf("short write %d of %d bytes", nw, len(value))
	}
	return nil
}

// Sysctl reads the net.* sysctl key (sysctl(8) syntax) inside the
// namespace, without the trailing newline. Errors: a key outside net.*,
// kernel errors (ENOENT, ...).
func (n *NS) Sysctl(key string) (string, error) {
	p, err := sysctlPath(key)
	if err != nil {
		return "", err
	}
	var v string
	err = n.Do(func() error {
		b, err := os.ReadFile(p)
		v = strings.TrimSpace(string(b))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("lab: sysctl %s in %s: %w", key, n.Name, err)
	}
	return v, nil
}

// forwardingKeys are the namespace-wide forwarding switches.
var forwardingKeys = []string{
	"net.ipv4.ip_forward",
	"net.ipv4.conf.all.forwarding",
	"net.ipv4.conf.default.forwarding",
	"net.ipv6.conf.all.forwarding",
	"net.ipv6.conf.default.forwarding",
}

// ForwardingOff checks that IP forwarding is off in the namespace:
// net.ipv4.ip_forward, net.ipv4.conf.{all,default}.forwarding,
// net.ipv6.conf.{all,default}.forwarding and every interface's
// net.ipv4.conf.<if>.forwarding and net.ipv6.conf.<if>.forwarding read 0.
// The error names the first sysctl that does not.
func (n *NS) ForwardingOff() error {
	return n.Do(func() error {
		keys := append([]string(nil), forwardingKeys...)
		for _, fam := range []string{"ipv4", "ipv6"} {
			entries, err := os.ReadDir("/proc/sys/net/" + fam + "/conf")
			if err != nil {
				return fmt.Errorf("lab: %s: %w", n.Name, err)
			}
			for _, e := range entries {
				if e.Name() != "all" && e.Name() != "default" {
					keys = append(keys, "net/"+fam+"/conf/"+e.Name()+"/forwarding")
				}
			}
		}
		for _, k := range keys {
			p, err := sysctlPath(k)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("lab: reading %s in %s: %w", k, n.Name, err)
			}
			if v := strings.TrimSpace(string(b)); v != "0" {
				return fmt.Errorf("lab: %s is %s in %s, want 0", k, v, n.Name)
			}
		}
		return nil
	})
}

// RootForwardingOff reads net.ipv4.ip_forward and
// net.ipv6.conf.all.forwarding of the network namespace the process runs in
// (the machine's root namespace), changing nothing, and returns an error
// naming the sysctl if either is not 0. A kernel without IPv6 counts as
// IPv6 forwarding off.
func RootForwardingOff() error {
	return inProcessNS(func() error {
		for _, k := range []string{"net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"} {
			p, _ := sysctlPath(k)
			b, err := os.ReadFile(p)
			if errors.Is(err, os.ErrNotExist) && strings.HasPrefix(k, "net.ipv6.") {
				continue
			}
			if err != nil {
				return fmt.Errorf("lab: reading %s in the root namespace: %w", k, err)
			}
			if v := strings.TrimSpace(string(b)); v != "0" {
				return fmt.Errorf("lab: %s is %s in the root namespace, want 0", k, v)
			}
		}
		return nil
	})
}
