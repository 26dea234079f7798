package agent

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Capabilities the agent needs (linux/capability.h): CAP_BPF and
// CAP_PERFMON to load the program (kernels since 5.8), CAP_NET_ADMIN to
// attach it and set promiscuity, CAP_SYS_ADMIN to enter another network
// namespace (--netns) and pin on bpffs.
var neededCaps = []struct {
	bit  uint
	name string
}{{39, "CAP_BPF"}, {12, "CAP_NET_ADMIN"}, {38, "CAP_PERFMON"}, {21, "CAP_SYS_ADMIN"}}

// checkCapabilities returns an error naming every needed capability the
// process lacks in its effective set, so a missing privilege is reported at
// once and before anything is changed, rather than as an EPERM halfway.
func checkCapabilities(netns bool) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	var missing []string
	for _, c := range neededCaps {
		if c.name == "CAP_SYS_ADMIN" && !netns {
			continue
		}
		if data[c.bit/32].Effective&(1<<(c.bit%32)) == 0 {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing capabilities %s: run lanmonitor-agent as root", strings.Join(missing, ", "))
	}
	return nil
}
