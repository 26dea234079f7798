package testenv

import (
	"errors"
	"os"

	"github.com/prometheus/procfs"
)

// ProcessCPU returns the user+system CPU time process pid has used, in
// seconds (/proc/PID/stat utime and stime, proc(5), read by
// prometheus/procfs). Errors: no such process, or /proc unreadable.
func ProcessCPU(pid int) (float64, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return 0, err
	}
	p, err := fs.Proc(pid)
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	if err != nil {
		return 0, err
	}
	return st.CPUTime(), nil
}

// ProcessRSS returns the resident set size of process pid, in bytes
// (/proc/PID/stat rss times the page size, proc(5)).
func ProcessRSS(pid int) (int, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return 0, err
	}
	p, err := fs.Proc(pid)
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	if err != nil {
		return 0, err
	}
	return st.ResidentMemory(), nil
}

// EtcdProcess returns the PID of the etcd that Start started: a child of
// this process named etcd. Errors: none found, or /proc unreadable.
func EtcdProcess() (int, error) {
	procs, err := procfs.AllProcs()
	if err != nil {
		return 0, err
	}
	for _, p := range procs {
		st, err := p.Stat()
		if err == nil && st.Comm == "etcd" && st.PPID == os.Getpid() {
			return p.PID, nil
		}
	}
	return 0, errors.New("no etcd child of this process")
}
