package localcluster

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DownOptions configure Down.
type DownOptions struct {
	// KeepLogs, if set, is a directory that receives a copy of the
	// cluster's logs before Dir is removed.
	KeepLogs string
	// Logf reports progress.
	Logf func(format string, args ...any)
}

// ErrNotUp is returned by Down when there is no cluster to tear down.
var ErrNotUp = errors.New("no cluster is up")

// Down tears the cluster down: it stops the recorded processes (and the
// containers and shims of the recorded containerd), unmounts and removes
// the cluster's directories, cgroups, lab interface and namespace and the
// agent's pins on the lab interface, restores the sysctls kubelet changed,
// /sys/fs/bpf's propagation and the nft ruleset, and then compares the
// host with the snapshot taken before the cluster, returning the
// differences as an error. Errors of single steps do not stop the others;
// Dir (with the records) is kept when any step failed, so that Down can be
// run again.
func Down(o DownOptions) error {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	unlock, err := lockFile(o.Logf)
	if err != nil {
		return err
	}
	defer unlock()
	return downLocked(o)
}

func downLocked(o DownOptions) error {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if !exists(Dir) && !exists(RunDir) {
		// Nothing recorded; still clean up a lab interface of a crashed up.
		if _, err := LabLink(); err == nil {
			return DeleteLab()
		}
		return ErrNotUp
	}
	t0 := time.Now()
	st, err := LoadState()
	if err != nil {
		logf("no usable state record (%v): cleaning up what is found", err)
		st = &State{}
	}
	before, err := LoadSnapshot(HostBeforeFile)
	if err != nil {
		logf("no host record (%v): cannot compare the host afterwards", err)
		before = nil
	}
	var errs []error
	step := func(what string, err error) {
		if err != nil {
			logf("%s: %v", what, err)
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
	}
	byName := map[string]*Proc{}
	for _, p := range st.Processes {
		byName[p.Name] = p
	}

	// 1. kubelet first, so that it restarts nothing.
	if p := byName["kubelet"]; p != nil {
		step("stop kubelet", p.stop(10*time.Second, logf))
	}
	// 2. Containers: through containerd while it runs (unmounts rootfs,
	// ends the shims), then whatever is left in the kubepods cgroups.
	if p := byName["containerd"]; p != nil && p.Alive() {
		step("remove containers", removeContainers(logf))
	}
	step("kill container processes", killKubepods(logf))
	// 3. containerd, then shims of this containerd (their command line
	// names its private socket).
	if p := byName["containerd"]; p != nil {
		step("stop containerd", p.stop(15*time.Second, logf))
	}
	step("kill shims", killMarked(ContainerdSocket, logf))
	// 4. The control plane, newest first.
	for i := len(st.Processes) - 1; i >= 0; i-- {
		p := st.Processes[i]
		if p.Name == "kubelet" || p.Name == "containerd" {
			continue
		}
		step("stop "+p.Name, p.stop(15*time.Second, logf))
	}
	logf("processes stopped (%.1fs)", time.Since(t0).Seconds())

	// 5. Mounts under the cluster's directories (kubelet's shared bind
	// mount of its root directory, pod volumes, container rootfs and shm).
	// Other watched paths only if they are new: a pre-existing
	// /var/lib/kubelet or /run/containerd belongs to someone else.
	ours := []string{Dir, RunDir}
	for _, p := range WatchedPaths {
		if before != nil && before.Paths[p] == nil && p != AgentPinRoot {
			ours = append(ours, p)
		}
	}
	step("unmount", unmountUnder(ours...))
	// CNI network namespaces (only for non-hostNetwork pods).
	if before != nil {
		entries, _ := os.ReadDir("/run/netns")
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "cni-") && !slices.Contains(before.Netns, e.Name()) {
				p := filepath.Join("/run/netns", e.Name())
				unix.Unmount(p, unix.MNT_DETACH)
				step("remove "+p, os.Remove(p))
			}
		}
	}
	// 6. Cgroups kubelet and runc created.
	step("remove cgroups", removeCgroups(before, logf))
	// 7. The lab interface and namespace; the agent's pins of it.
	step("delete lab interface", DeleteLab())
	step("remove pins", removePins(before))
	// 8. Host settings.
	if before != nil {
		step("restore sysctls", restoreSysctls(before, logf))
	}
	if st.BPFFSMadeShared {
		if err := unix.Mount("", "/sys/fs/bpf", "", unix.MS_PRIVATE, ""); err != nil {
			step("make /sys/fs/bpf private again", err)
		} else {
			logf("/sys/fs/bpf is a private mount again")
		}
	}
	if before != nil {
		step("restore nft ruleset", restoreNFT(before, logf))
	}
	// 9. Directories that did not exist before (or, without a record,
	// the ones that are the cluster's own).
	for _, p := range WatchedPaths {
		if p == Dir || p == AgentPinRoot {
			continue
		}
		if (before == nil && p == RunDir) || (before != nil && before.Paths[p] == nil && exists(p)) {
			step("remove "+p, removeTree(p))
		}
	}
	if before != nil && before.Paths["/var/log/containers"] != nil {
		step("remove container log links", removeNewEntries("/var/log/containers", before.Paths["/var/log/containers"]))
	}
	if len(errs) > 0 {
		return fmt.Errorf("cluster-down incomplete; %s kept, run it again: %w", Dir, errors.Join(errs...))
	}
	if o.KeepLogs != "" {
		if err := os.MkdirAll(o.KeepLogs, 0o755); err == nil {
			exec.Command("cp", "-a", LogDir+"/.", o.KeepLogs).Run()
		}
	}
	if err := removeTree(Dir); err != nil {
		return fmt.Errorf("remove %s: %w", Dir, err)
	}
	logf("torn down in %.1fs", time.Since(t0).Seconds())

	// 10. Compare.
	if before == nil {
		return nil
	}
	after, err := TakeSnapshot()
	if err != nil {
		return fmt.Errorf("recording the host after: %w", err)
	}
	if d := Diff(before, after); len(d) > 0 {
		return fmt.Errorf("the host differs from before cluster-up:\n%s", FormatDiff(d))
	}
	logf("host as before cluster-up: sysctls, mounts, nft ruleset, cgroups, directories, interfaces, processes")
	return nil
}

// ctr runs ctr against the cluster's containerd.
func ctr(args ...string) (string, error) {
	out, err := exec.Command("ctr", append([]string{"--address", ContainerdSocket, "--timeout", "20s", "-n", ContainerdNamespace}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func removeContainers(logf func(string, ...any)) error {
	out, err := ctr("tasks", "ls", "-q")
	if err != nil {
		return err
	}
	var errs []error
	tasks := strings.Fields(out)
	for _, id := range tasks {
		ctr("tasks", "kill", "-s", "SIGKILL", id)
	}
	for _, id := range tasks {
		if _, err := ctr("tasks", "delete", "-f", id); err != nil && !strings.Contains(err.Error(), "not found") {
			errs = append(errs, err)
		}
	}
	out, err = ctr("containers", "ls", "-q")
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	cs := strings.Fields(out)
	for _, id := range cs {
		if _, err := ctr("containers", "delete", id); err != nil && !strings.Contains(err.Error(), "not found") {
			errs = append(errs, err)
		}
	}
	logf("removed %d tasks and %d containers", len(tasks), len(cs))
	return errors.Join(errs...)
}

// kubepodsDirs returns every kubepods cgroup directory (any depth below a
// hierarchy's kubepods), deepest first.
func kubepodsDirs() ([]string, error) {
	mounts, err := CgroupMounts()
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, mp := range mounts {
		for _, top := range []string{"kubepods", "kubepods.slice"} {
			root := filepath.Join(mp, top)
			if !exists(root) {
				continue
			}
			filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
		}
	}
	slices.SortStableFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return dirs, nil
}

// killKubepods kills every process in a kubepods cgroup: the containers
// of this node, started by the recorded containerd.
func killKubepods(logf func(string, ...any)) error {
	for attempt := 0; attempt < 50; attempt++ {
		dirs, err := kubepodsDirs()
		if err != nil {
			return err
		}
		var pids []int
		seen := map[int]bool{}
		for _, d := range dirs {
			// cgroup v1's cgroup.procs may list a process once per thread.
			b, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
		}
		if len(pids) == 0 {
			return nil
		}
		if attempt == 0 {
			logf("killing %d container processes left in kubepods cgroups", len(pids))
		}
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("processes remain in kubepods cgroups")
}

// killMarked kills processes whose command line contains marker.
func killMarked(marker string, logf func(string, ...any)) error {
	entries, _ := os.ReadDir("/proc")
	var errs []error
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(raw), marker) {
			continue
		}
		logf("killing leftover pid %d: %s", pid, strings.ReplaceAll(string(raw), "\x00", " "))
		errs = append(errs, killPID(pid, marker))
	}
	return errors.Join(errs...)
}

// unmountUnder unmounts every mount at or below dirs, deepest first.
func unmountUnder(dirs ...string) error {
	var errs []error
	for attempt := 0; attempt < 3; attempt++ {
		mps, err := MountsUnder(dirs...)
		if err != nil {
			return err
		}
		if len(mps) == 0 {
			return nil
		}
		errs = nil
		for _, mp := range mps {
			if err := unix.Unmount(mp, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
					errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// removeTree removes p after making sure nothing is mounted below it (so
// that RemoveAll never descends into another file system).
func removeTree(p string) error {
	if err := unmountUnder(p); err != nil {
		return err
	}
	if mps, _ := MountsUnder(p); len(mps) > 0 {
		return fmt.Errorf("%s: still mounted: %v", p, mps)
	}
	return os.RemoveAll(p)
}

func removeNewEntries(dir string, before []string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		found := false
		for _, b := range before {
			if strings.Contains(b, " "+e.Name()) {
				found = true
				break
			}
		}
		if !found {
			errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
		}
	}
	return errors.Join(errs...)
}

// removeCgroups removes the kubepods cgroups (rmdir, deepest first) that
// did not exist before the cluster.
func removeCgroups(before *Snapshot, logf func(string, ...any)) error {
	mounts, err := CgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	n := 0
	for _, mp := range mounts {
		for _, top := range []string{"kubepods", "kubepods.slice"} {
			root := filepath.Join(mp, top)
			if !exists(root) || (before != nil && slices.Contains(before.Cgroups[mp], top)) {
				continue
			}
			var dirs []string
			filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			slices.SortStableFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
			for _, d := range dirs {
				var err error
				for i := 0; i < 50; i++ { // a cgroup empties shortly after its last process exits
					if err = unix.Rmdir(d); err == nil || errors.Is(err, unix.ENOENT) {
						err = nil
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil {
					errs = append(errs, fmt.Errorf("rmdir %s: %w", d, err))
				} else {
					n++
				}
			}
		}
	}
	if n > 0 {
		logf("removed %d kubepods cgroups", n)
	}
	return errors.Join(errs...)
}

// removePins removes the agent's pins of the lab interface (left when the
// cluster goes down with the chart installed: the agent keeps its program
// pinned on SIGTERM), and the agent's pin root if it did not exist before
// and is empty.
func removePins(before *Snapshot) error {
	var errs []error
	if exists(LabInterfacePins) {
		errs = append(errs, os.RemoveAll(LabInterfacePins))
	}
	if exists(AgentPinRoot) && (before == nil || before.Paths[AgentPinRoot] == nil) {
		if err := os.Remove(AgentPinRoot); err != nil && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func restoreSysctls(before *Snapshot, logf func(string, ...any)) error {
	var errs []error
	for _, k := range KubeletSysctls {
		want, ok := before.Sysctls[k]
		if !ok {
			continue
		}
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if got := strings.TrimSpace(string(b)); got != want {
			if err := os.WriteFile("/proc/sys/"+k, []byte(want), 0); err != nil {
				errs = append(errs, fmt.Errorf("%s=%s: %w", k, want, err))
				continue
			}
			logf("restored %s: %s -> %s", strings.ReplaceAll(k, "/", "."), got, want)
		}
	}
	return errors.Join(errs...)
}

func restoreNFT(before *Snapshot, logf func(string, ...any)) error {
	now, nowErr := nftRuleset()
	if now == before.NFT && nowErr == before.NFTError {
		return nil
	}
	if nowErr != "" {
		return errors.New(nowErr)
	}
	logf("nft ruleset changed during the cluster's life; restoring the recorded one")
	if out, err := exec.Command("nft", "flush", "ruleset").CombinedOutput(); err != nil {
		return fmt.Errorf("nft flush ruleset: %v: %s", err, out)
	}
	if strings.TrimSpace(before.NFT) == "" {
		return nil
	}
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(before.NFT)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f: %v: %s", err, out)
	}
	return nil
}
