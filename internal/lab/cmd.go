package lab

import (
	"context"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// Command returns a command that runs name with args inside the network
// namespace only, through `nsenter --net=<Path> --` (util-linux), which
// enters the namespace and execs name in place. Unlike `ip netns exec` it
// creates no mount namespace, so the process sees the machine's /sys/fs/bpf
// (pins it makes persist) and the same files as the caller. Mind that /sys
// is still the root namespace's sysfs: /sys/class/net lists the root's
// interfaces; use netlink (`ip link`) or /proc/sys and /proc/net, which
// follow the process's namespace.
//
// The process gets SIGKILL when the thread that started it exits, so it
// does not outlive a crashed test (Pdeathsig). Start it with Start or Run
// rather than cmd.Start/Run/Output: those fork from whatever thread the
// calling goroutine is on, and if that thread is later discarded (a
// goroutine that locked it, e.g. to enter a namespace, exits), the child is
// killed. ctx kills the process when done, as exec.CommandContext does.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.Path, "--", name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// starter is a goroutine locked for the life of the process to an OS
// thread that never exits, from which Start forks children: a Pdeathsig set
// on them fires only when the process dies.
var starter struct {
	once sync.Once
	reqs chan startReq
}

type startReq struct {
	cmd  *exec.Cmd
	done chan error
}

// Start starts cmd (any *exec.Cmd, typically from NS.Command) from a
// dedicated OS thread that lives as long as the process, so that the
// child's Pdeathsig fires when the process dies and at no other time. Wait
// for it with cmd.Wait as usual. Errors: those of cmd.Start.
func Start(cmd *exec.Cmd) error {
	starter.once.Do(func() {
		starter.reqs = make(chan startReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread never exits
			for r := range starter.reqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	starter.reqs <- startReq{cmd, done}
	return <-done
}

// Run starts cmd with Start and waits for it to exit. Errors: those of
// cmd.Start and cmd.Wait (*exec.ExitError for a non-zero exit).
func Run(cmd *exec.Cmd) error {
	if err := Start(cmd); err != nil {
		return err
	}
	return cmd.Wait()
}
