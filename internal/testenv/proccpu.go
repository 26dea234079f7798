package testenv

import "github.com/prometheus/procfs"

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
