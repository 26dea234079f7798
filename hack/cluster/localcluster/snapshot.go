package localcluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// KubeletSysctls are the sysctls kubelet sets at start (its
// setupKernelTunables, with protectKernelDefaults false) and never puts
// back. Down restores the recorded values of these.
var KubeletSysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// WatchedPaths are directories that kubelet, containerd, runc or the CNI
// plugins use by default or by hard-coded path. The cluster redirects most
// of them under Dir and RunDir; the snapshot records all of them so that a
// leftover is found wherever it lands. Down removes those that did not exist
// before the cluster.
var WatchedPaths = []string{
	Dir, RunDir,
	"/var/lib/kubelet", "/var/lib/containerd", "/run/containerd", "/var/run/containerd",
	"/etc/cni", "/opt/cni", "/var/lib/cni", "/run/cni",
	"/var/log/containers", "/var/log/pods",
	"/usr/libexec/kubernetes", "/etc/kubernetes", "/run/kubernetes", "/var/lib/etcd",
	"/opt/containerd", "/var/lib/nerdctl", "/run/runc",
	AgentPinRoot,
}

// Snapshot is the state of the host that the cluster may change.
type Snapshot struct {
	Taken time.Time `json:"taken"`
	// Sysctls are every readable /proc/sys file of the root namespace
	// (key "vm/overcommit_memory"), but the Volatile ones.
	Sysctls map[string]string `json:"sysctls"`
	// Mounts are "mountpoint fstype source root propagation" for every
	// mount of the root mount namespace, but other labs' /run/netns ones.
	Mounts []string `json:"mounts"`
	// NFT is the nf_tables ruleset as `nft list ruleset` prints it (""
	// for the empty one). It records the kernel's state, not whether the
	// nft tool is installed: without nft the kernel is asked over netlink
	// for its tables, and with none the ruleset is "" as well. NFTError
	// says why the ruleset could not be read ("" when it was).
	NFT      string `json:"nft"`
	NFTError string `json:"nftError,omitempty"`
	// LegacyTables are /proc/net/{ip,ip6,arp}_tables_names.
	LegacyTables map[string]string `json:"legacyTables"`
	// Paths maps each of WatchedPaths to its recursive listing (type,
	// mode, relative path), nil when absent.
	Paths map[string][]string `json:"paths"`
	// Cgroups maps each cgroup hierarchy's mount point to its top-level
	// child cgroups.
	Cgroups map[string][]string `json:"cgroups"`
	// Links are the root network namespace's interfaces: "name flags xdp".
	Links []string `json:"links"`
	// Netns are the /run/netns entries the cluster may create: the lab
	// namespace and CNI's cni-* ones.
	Netns []string `json:"netns"`
	// Processes are processes that belong to a cluster: command line
	// naming Dir, RunDir or the containerd socket, or in a kubepods cgroup.
	Processes []string `json:"processes"`
}

// volatileSysctl matches sysctls that change by themselves.
var volatileSysctl = regexp.MustCompile(`^(kernel/random/|fs/(dentry-state|dentry-negative|file-nr|inode-nr|inode-state|aio-nr|quota/)|kernel/(ns_last_pid|pty/nr|perf_event_max_sample_rate|tainted)$|net/netfilter/nf_conntrack_count$|fs/binfmt_misc/|net/ipv6/route/gc_|vm/stat_)`)

// otherNetns matches /run/netns entries that are not the cluster's.
func clusterNetns(name string) bool {
	return strings.HasPrefix(name, LabPrefix) || strings.HasPrefix(name, "cni-")
}

// TakeSnapshot records the host. It only reads.
func TakeSnapshot() (*Snapshot, error) {
	s := &Snapshot{Taken: time.Now(), Paths: map[string][]string{}, LegacyTables: map[string]string{}}
	var errs []error
	var err error
	if s.Sysctls, err = readSysctls(); err != nil {
		errs = append(errs, err)
	}
	if s.Mounts, err = readMounts(); err != nil {
		errs = append(errs, err)
	}
	s.NFT, s.NFTError = nftRuleset()
	for _, n := range []string{"ip_tables_names", "ip6_tables_names", "arp_tables_names"} {
		b, err := os.ReadFile("/proc/net/" + n)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		s.LegacyTables[n] = string(b)
	}
	for _, p := range WatchedPaths {
		l, err := listTree(p, 20000)
		if err != nil {
			errs = append(errs, err)
		}
		s.Paths[p] = l
	}
	if s.Cgroups, err = readCgroups(); err != nil {
		errs = append(errs, err)
	}
	if s.Links, err = rootLinks(); err != nil {
		errs = append(errs, err)
	}
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if clusterNetns(e.Name()) {
			s.Netns = append(s.Netns, e.Name())
		}
	}
	s.Processes = ClusterProcesses()
	return s, errors.Join(errs...)
}

func readSysctls() (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir("/proc/sys", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // vanished interface directories and the like
		}
		key := strings.TrimPrefix(path, "/proc/sys/")
		if d.IsDir() {
			if key == "fs/binfmt_misc" {
				return fs.SkipDir
			}
			return nil
		}
		if volatileSysctl.MatchString(key) {
			return nil
		}
		info, err := d.Info()
		if err != nil || info.Mode().Perm()&0o444 == 0 {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil // EPERM/EINVAL on read-protected or write-only entries
		}
		out[key] = strings.TrimSpace(string(b))
		return nil
	})
	return out, err
}

// mountInfo is one line of /proc/self/mountinfo.
type mountInfo struct {
	mountPoint, root, fstype, source, optional string
}

func parseMountInfo() ([]mountInfo, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []mountInfo
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 7 || sep < 6 || sep+2 >= len(f) {
			return nil, fmt.Errorf("mountinfo: malformed line %q", line)
		}
		out = append(out, mountInfo{
			mountPoint: unescapeMount(f[4]), root: unescapeMount(f[3]), fstype: f[sep+1], source: f[sep+2],
			optional: strings.Join(f[6:sep], ","),
		})
	}
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func readMounts() ([]string, error) {
	ms, err := parseMountInfo()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if dir, name := filepath.Split(m.mountPoint); dir == "/run/netns/" && !clusterNetns(name) {
			continue // other labs' namespaces come and go
		}
		out = append(out, fmt.Sprintf("%s %s %s %s [%s]", m.mountPoint, m.fstype, m.source, m.root, m.optional))
	}
	sort.Strings(out)
	return out, nil
}

// MountsUnder returns the mount points at or below one of dirs, deepest
// first (the order to unmount them in).
func MountsUnder(dirs ...string) ([]string, error) {
	ms, err := parseMountInfo()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		for _, d := range dirs {
			if m.mountPoint == d || strings.HasPrefix(m.mountPoint, d+"/") {
				out = append(out, m.mountPoint)
				break
			}
		}
	}
	// Mount order is parent first; reverse it, and longer paths first
	// among equals.
	slices.Reverse(out)
	sort.SliceStable(out, func(i, j int) bool { return strings.Count(out[i], "/") > strings.Count(out[j], "/") })
	return out, nil
}

// MountPropagation returns the optional fields (shared:N, master:N) of the
// mount at exactly mountPoint ("" for a private mount). Errors: not a mount
// point.
func MountPropagation(mountPoint string) (string, error) {
	ms, err := parseMountInfo()
	if err != nil {
		return "", err
	}
	found, prop := false, ""
	for _, m := range ms {
		if m.mountPoint == mountPoint {
			found, prop = true, m.optional // the last one is the visible one
		}
	}
	if !found {
		return "", fmt.Errorf("%s is not a mount point", mountPoint)
	}
	return prop, nil
}

// nftRuleset reads the ruleset for Snapshot.NFT and NFTError with nft,
// or, when nft is not installed, from the kernel's list of tables.
func nftRuleset() (string, string) {
	return readRuleset(func() (string, error) {
		out, err := exec.Command("nft", "list", "ruleset").Output()
		return string(out), err
	}, kernelTables)
}

// readRuleset returns the ruleset and the reason it could not be read
// ("" when it was). list runs `nft list ruleset` (an error wrapping
// exec.ErrNotFound when nft is missing); tables lists the kernel's
// nf_tables tables ("inet filter"). Without nft, a kernel with no tables
// has the empty ruleset, which nft prints as "": the reading is the same
// with and without the tool. A kernel with tables but no nft to list their
// rules gives an NFTError naming the tables.
func readRuleset(list func() (string, error), tables func() ([]string, error)) (string, string) {
	out, err := list()
	if err == nil {
		return out, ""
	}
	if !errors.Is(err, exec.ErrNotFound) {
		return "", fmt.Sprintf("nft list ruleset: %v", err)
	}
	ts, err := tables()
	switch {
	case err != nil:
		return "", fmt.Sprintf("nft not installed, and listing the kernel's nf_tables tables failed: %v", err)
	case len(ts) > 0:
		return "", fmt.Sprintf("nft not installed to list the rules of the kernel's nf_tables tables %s", strings.Join(ts, ", "))
	}
	return "", ""
}

// nftFamilies names the table families as nft does.
var nftFamilies = map[nftables.TableFamily]string{
	nftables.TableFamilyIPv4: "ip", nftables.TableFamilyIPv6: "ip6", nftables.TableFamilyINet: "inet",
	nftables.TableFamilyARP: "arp", nftables.TableFamilyBridge: "bridge", nftables.TableFamilyNetdev: "netdev",
}

// kernelTables lists the nf_tables tables of the process's network
// namespace over netlink ("inet filter", sorted). Needs CAP_NET_ADMIN.
func kernelTables() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	ts, err := c.ListTables()
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ts))
	for _, t := range ts {
		f, ok := nftFamilies[t.Family]
		if !ok {
			f = fmt.Sprintf("family%d", t.Family)
		}
		out = append(out, f+" "+t.Name)
	}
	sort.Strings(out)
	return out, nil
}

// listTree lists path recursively ("d 0755 sub/dir", "f 0644 sub/file",
// "l -> target"), nil when path does not exist. It does not descend into
// mount points below path (e.g. pod volumes), listing them as "m".
func listTree(path string, limit int) ([]string, error) {
	var root unix.Stat_t
	if err := unix.Lstat(path, &root); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, err
	}
	out := []string{}
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if len(out) >= limit {
			return fs.SkipAll
		}
		rel, _ := filepath.Rel(path, p)
		info, err := d.Info()
		if err != nil {
			return nil
		}
		var st unix.Stat_t
		if d.IsDir() && p != path && unix.Lstat(p, &st) == nil && st.Dev != root.Dev {
			out = append(out, "m "+rel)
			return fs.SkipDir
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			t, _ := os.Readlink(p)
			out = append(out, "l "+rel+" -> "+t)
		case d.IsDir():
			out = append(out, fmt.Sprintf("d %04o %s", info.Mode().Perm(), rel))
		default:
			out = append(out, fmt.Sprintf("f %04o %s", info.Mode().Perm(), rel))
		}
		return nil
	})
	return out, err
}

// CgroupMounts returns the mount points of the cgroup hierarchies (v1 and
// the v2 one of a hybrid setup).
func CgroupMounts() ([]string, error) {
	ms, err := parseMountInfo()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		if (m.fstype == "cgroup" || m.fstype == "cgroup2") && m.root == "/" {
			out = append(out, m.mountPoint)
		}
	}
	return out, nil
}

func readCgroups() (map[string][]string, error) {
	mounts, err := CgroupMounts()
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, mp := range mounts {
		entries, err := os.ReadDir(mp)
		if err != nil {
			return nil, err
		}
		dirs := []string{}
		for _, e := range entries {
			if e.IsDir() {
				dirs = append(dirs, e.Name())
			}
		}
		out[mp] = dirs
	}
	return out, nil
}

// rootHandle returns a netlink handle whose socket lives in the process's
// network namespace, checked to be the machine's root namespace: that of
// kthreadd (PID 2), whose kernel threads always run in init_net (PID 1's
// namespace links may not be readable, e.g. under a sandboxing init).
func rootHandle() (*netlink.Handle, error) {
	var self, init unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		return nil, err
	}
	if err := unix.Stat("/proc/2/ns/net", &init); err != nil {
		if err := unix.Stat("/proc/1/ns/net", &init); err != nil {
			return nil, fmt.Errorf("reading the root network namespace: %w", err)
		}
	}
	if self.Ino != init.Ino || self.Dev != init.Dev {
		return nil, errors.New("not running in the machine's root network namespace")
	}
	h, err := netns.GetFromPath("/proc/self/ns/net")
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return netlink.NewHandleAt(h)
}

func rootLinks() ([]string, error) {
	h, err := rootHandle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range links {
		a := l.Attrs()
		xdp := "noxdp"
		if a.Xdp != nil && a.Xdp.Attached {
			xdp = "xdp"
		}
		promisc := ""
		if a.RawFlags&unix.IFF_PROMISC != 0 {
			promisc = ",PROMISC"
		}
		out = append(out, fmt.Sprintf("%s %s%s %s", a.Name, a.Flags, promisc, xdp))
	}
	sort.Strings(out)
	return out, nil
}

// ClusterProcesses lists "pid cmdline" of processes that belong to a
// cluster of this package: their command line names Dir, RunDir or the
// containerd socket (daemons, shims), or they run in a kubepods cgroup
// (containers).
func ClusterProcesses() []string {
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue // kernel thread or gone
		}
		cmd := strings.TrimSpace(string(bytes.ReplaceAll(raw, []byte{0}, []byte{' '})))
		cg, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if strings.Contains(cmd, Dir) || strings.Contains(cmd, RunDir) || strings.Contains(string(cg), "/kubepods") {
			out = append(out, fmt.Sprintf("%d %s", pid, cmd))
		}
	}
	return out
}

// Diff compares two snapshots and returns the differences by category
// (sysctls, mounts, nft, iptables-legacy, paths, cgroups, links, netns,
// processes); an empty map means none.
func Diff(before, after *Snapshot) map[string][]string {
	d := map[string][]string{}
	add := func(cat, format string, args ...any) { d[cat] = append(d[cat], fmt.Sprintf(format, args...)) }
	keys := map[string]bool{}
	for k := range before.Sysctls {
		keys[k] = true
	}
	for k := range after.Sysctls {
		keys[k] = true
	}
	for _, k := range sortedKeys(keys) {
		b, inB := before.Sysctls[k]
		a, inA := after.Sysctls[k]
		switch {
		case !inA:
			add("sysctls", "%s: %q before, gone after", k, b)
		case !inB:
			add("sysctls", "%s: new, %q", k, a)
		case a != b:
			add("sysctls", "%s: %q before, %q after", k, b, a)
		}
	}
	setDiff(d, "mounts", before.Mounts, after.Mounts)
	if before.NFT != after.NFT || before.NFTError != after.NFTError {
		add("nft", "ruleset before:\n%s%s\nafter:\n%s%s", before.NFT, before.NFTError, after.NFT, after.NFTError)
	}
	for _, k := range sortedKeys(before.LegacyTables, after.LegacyTables) {
		if before.LegacyTables[k] != after.LegacyTables[k] {
			add("iptables-legacy", "/proc/net/%s: %q before, %q after", k, before.LegacyTables[k], after.LegacyTables[k])
		}
	}
	for _, p := range sortedKeys(before.Paths, after.Paths) {
		b, a := before.Paths[p], after.Paths[p]
		switch {
		case b == nil && a != nil:
			add("paths", "%s: created (%d entries)", p, len(a))
		case b != nil && a == nil:
			add("paths", "%s: removed", p)
		default:
			for _, x := range setDifference(a, b) {
				add("paths", "%s: new %s", p, x)
			}
			for _, x := range setDifference(b, a) {
				add("paths", "%s: gone %s", p, x)
			}
		}
	}
	for _, mp := range sortedKeys(before.Cgroups, after.Cgroups) {
		for _, x := range setDifference(after.Cgroups[mp], before.Cgroups[mp]) {
			add("cgroups", "%s/%s: new", mp, x)
		}
		for _, x := range setDifference(before.Cgroups[mp], after.Cgroups[mp]) {
			add("cgroups", "%s/%s: gone", mp, x)
		}
	}
	setDiff(d, "links", before.Links, after.Links)
	setDiff(d, "netns", before.Netns, after.Netns)
	setDiff(d, "processes", before.Processes, after.Processes)
	return d
}

func setDiff(d map[string][]string, cat string, before, after []string) {
	for _, x := range setDifference(after, before) {
		d[cat] = append(d[cat], "new: "+x)
	}
	for _, x := range setDifference(before, after) {
		d[cat] = append(d[cat], "gone: "+x)
	}
}

// setDifference returns the elements of a that are not in b.
func setDifference(a, b []string) []string {
	in := map[string]bool{}
	for _, x := range b {
		in[x] = true
	}
	var out []string
	for _, x := range a {
		if !in[x] {
			out = append(out, x)
		}
	}
	return out
}

func sortedKeys[V any](ms ...map[string]V) []string {
	set := map[string]bool{}
	for _, m := range ms {
		for k := range m {
			set[k] = true
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// FormatDiff renders Diff's result, one category per paragraph.
func FormatDiff(d map[string][]string) string {
	var b strings.Builder
	for _, cat := range sortedKeys(d) {
		fmt.Fprintf(&b, "%s:\n", cat)
		for _, x := range d[cat] {
			fmt.Fprintf(&b, "  %s\n", x)
		}
	}
	return b.String()
}

// SaveSnapshot and LoadSnapshot store a snapshot as JSON.
func SaveSnapshot(path string, s *Snapshot) error {
	b, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b, 0o600)
}

func LoadSnapshot(path string) (*Snapshot, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s Snapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &s, nil
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
