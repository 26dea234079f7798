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
	st, err := procStat(pid)
	return st.CPUTime(), err
}

// ProcessRSS returns the resident set size of process pid, in bytes
// (/proc/PID/stat rss times the page size, proc(5)). Errors: as ProcessCPU.
func ProcessRSS(pid int) (int, error) {
	st, err := procStat(pid)
	return st.ResidentMemory(), err
}

// procStat reads /proc/PID/stat.
func procStat(pid int) (procfs.ProcStat, error) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return procfs.ProcStat{}, err
	}
	p, err := fs.Proc(pid)
	if err != nil {
		return procfs.ProcStat{}, err
	}
	return p.Stat()
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
