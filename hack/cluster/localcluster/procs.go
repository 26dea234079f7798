package localcluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Proc is a process the cluster started, identified by PID and start time.
type Proc struct {
	Name string `json:"name"`
	PID  int    `json:"pid"`
	// StartTime is field 22 of /proc/<pid>/stat (clock ticks since boot):
	// a PID whose start time differs is another process and is left alone.
	StartTime uint64   `json:"startTime"`
	Argv      []string `json:"argv"`
	Log       string   `json:"log"`

	exited chan struct{} // closed when the process exits (only in the process that started it)
	err    error
}

// State is the record of a cluster: what up started and changed.
type State struct {
	Started   time.Time `json:"started"`
	NodeName  string    `json:"nodeName"`
	NodeIP    string    `json:"nodeIP"`
	KubeDir   string    `json:"kubeDir"`
	Processes []*Proc   `json:"processes"`
	// BPFFSMadeShared is true when up made /sys/fs/bpf a shared mount
	// (containerd refuses HostToContainer propagation from a private
	// one); down makes it private again.
	BPFFSMadeShared bool `json:"bpffsMadeShared"`
	// LabCreated is true once the lab veth and namespace exist.
	LabCreated bool `json:"labCreated"`
	// Complete is true once up finished.
	Complete bool `json:"complete"`
}

// LoadState reads StateFile. Errors: os.ErrNotExist when no cluster is up.
func LoadState() (*State, error) {
	b, err := os.ReadFile(StateFile)
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", StateFile, err)
	}
	return &s, nil
}

func (s *State) save() error {
	b, err := json.MarshalIndent(s, "", " ")
	if err != nil {
		return err
	}
	return writeFileAtomic(StateFile, b, 0o600)
}

// procStartTime returns field 22 of /proc/<pid>/stat and the state letter.
func procStartTime(pid int) (uint64, string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", err
	}
	// The command name (field 2) may contain spaces; it ends at the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, "", fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return 0, "", fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	st, err := strconv.ParseUint(f[19], 10, 64)
	return st, f[0], err
}

// Alive reports whether the recorded process still runs (same PID and
// start time, not a zombie).
func (p *Proc) Alive() bool {
	st, state, err := procStartTime(p.PID)
	return err == nil && st == p.StartTime && state != "Z" && state != "X"
}

// procEnv is the environment of the cluster's daemons: nothing of the
// caller's (no KUBECONFIG, proxies or Go settings), a PATH with the system
// directories (containerd finds runc and its shim there, kubelet mount).
var procEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"LANG=C.UTF-8",
}

// startDetached starts argv in a new session (so that a Ctrl-C of make
// does not reach it) with its output appended to LogDir/<name>.log, and
// records it in s. The process outlives the caller.
func (s *State) startDetached(name string, argv ...string) (*Proc, error) {
	logPath := filepath.Join(LogDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = procEnv
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	st, _, err := procStartTime(cmd.Process.Pid)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, PID: cmd.Process.Pid, StartTime: st, Argv: argv, Log: logPath, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait() // reaps it while we run; init does afterwards
		close(p.exited)
	}()
	s.Processes = append(s.Processes, p)
	return p, s.save()
}

// exitedEarly returns an error naming the log if p exited.
func (p *Proc) exitedEarly() error {
	if p.exited == nil {
		return nil
	}
	select {
	case <-p.exited:
		return fmt.Errorf("%s exited (%v); last lines of %s:\n%s", p.Name, p.err, p.Log, tailFile(p.Log, 30))
	default:
		return nil
	}
}

// tailFile returns the last n lines of path.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop sends SIGTERM to p if it is still the recorded process, waits up
// to grace, then sends SIGKILL and waits for it to be gone.
func (p *Proc) stop(grace time.Duration, logf func(string, ...any)) error {
	if !p.Alive() {
		return nil
	}
	if err := unix.Kill(p.PID, unix.SIGTERM); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("SIGTERM %s (pid %d): %w", p.Name, p.PID, err)
	}
	if waitGone(p, grace) {
		return nil
	}
	logf("%s (pid %d) still running %v after SIGTERM: SIGKILL", p.Name, p.PID, grace)
	if err := unix.Kill(p.PID, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("SIGKILL %s (pid %d): %w", p.Name, p.PID, err)
	}
	if !waitGone(p, 10*time.Second) {
		return fmt.Errorf("%s (pid %d) survived SIGKILL", p.Name, p.PID)
	}
	return nil
}

func waitGone(p *Proc, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for p.Alive() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// killPID sends SIGKILL to pid if its command line still contains marker
// (a process found by a scan, e.g. a shim naming our containerd socket),
// and waits for it to go.
func killPID(pid int, marker string) error {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(raw), marker) {
		return nil
	}
	st, _, err := procStartTime(pid)
	if err != nil {
		return nil
	}
	if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	p := &Proc{PID: pid, StartTime: st}
	if !waitGone(p, 10*time.Second) {
		return fmt.Errorf("pid %d survived SIGKILL", pid)
	}
	return nil
}
