// Package privileged gates tests that need root: loading BPF programs,
// creating network namespaces and veth pairs. Such a test calls Require
// first. Without the privileges it skips with a clear message, unless
// LANMONITOR_REQUIRE_PRIVILEGED=1 (set by CI), where it fails instead so that
// a test that cannot run is never mistaken for one that passed.
package privileged

import (
	"errors"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// EnvRequire is the variable that turns skips into failures.
const EnvRequire = "LANMONITOR_REQUIRE_PRIVILEGED"

// BPFFS is where the bpf filesystem is expected.
const BPFFS = "/sys/fs/bpf"

var (
	mountOnce sync.Once
	mountErr  error
)

// Require skips (or, with LANMONITOR_REQUIRE_PRIVILEGED=1, fails) t unless
// the process runs as root. It also makes sure a bpffs is mounted on
// /sys/fs/bpf, mounting one if none is (as systemd does at boot).
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		msg := "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): run `sudo make test`"
		if os.Getenv(EnvRequire) == "1" {
			t.Fatalf("%s; %s=1 forbids skipping", msg, EnvRequire)
		}
		t.Skip(msg)
	}
	mountOnce.Do(func() { mountErr = EnsureBPFFS() })
	if mountErr != nil {
		t.Fatalf("bpffs: %v", mountErr)
	}
}

// EnsureBPFFS mounts a bpf filesystem on /sys/fs/bpf unless one is there.
func EnsureBPFFS() error {
	var st unix.Statfs_t
	if err := unix.Statfs(BPFFS, &st); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(BPFFS, 0o755); err != nil {
		return err
	}
	return unix.Mount("bpf", BPFFS, "bpf", 0, "mode=0700")
}
