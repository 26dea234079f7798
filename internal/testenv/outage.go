package testenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
)

// StopAPIServer stops kube-apiserver as an outage would, etcd still
// running: the process is terminated and nothing answers on its port until
// StartAPIServer starts the same command line again (same port,
// certificates and keys, so every client's kubeconfig stays valid).
func (e *Env) StopAPIServer() error {
	if e.restarted != nil {
		return e.stopRestarted()
	}
	pid, argv, err := APIServerProcess(e.Config.Host)
	if err != nil {
		return err
	}
	e.apiArgv = argv
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	// envtest waits for (reaps) its child, so the PID goes away.
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			deadline = time.Now().Add(30 * time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// StartAPIServer starts kube-apiserver again after StopAPIServer and waits
// until it is ready (GET /readyz). Env.Stop stops it.
func (e *Env) StartAPIServer(ctx context.Context) error {
	if e.apiArgv == nil {
		return errors.New("kube-apiserver was not stopped by StopAPIServer")
	}
	if e.restarted != nil {
		return errors.New("kube-apiserver already restarted")
	}
	cmd := exec.Command(e.apiArgv[0], e.apiArgv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // as envtest starts it
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("restart kube-apiserver: %w", err)
	}
	e.restarted = cmd
	e.restartedDone = make(chan struct{})
	go func() { cmd.Wait(); close(e.restartedDone) }()
	hc, err := rest.HTTPClientFor(e.Config)
	if err != nil {
		return err
	}
	hc.Timeout = 5 * time.Second
	last := errors.New("not asked yet")
	for {
		if resp, err := hc.Get(strings.TrimSuffix(e.Config.Host, "/") + "/readyz"); err != nil {
			last = err
		} else {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("%s: %s", resp.Status, body)
		}
		select {
		case <-e.restartedDone:
			e.restarted = nil
			return fmt.Errorf("restarted kube-apiserver exited (last /readyz: %v)", last)
		case <-ctx.Done():
			return fmt.Errorf("restarted kube-apiserver not ready: %w (last /readyz: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stopRestarted stops the kube-apiserver of StartAPIServer.
func (e *Env) stopRestarted() error {
	defer func() { e.restarted = nil }()
	e.restarted.Process.Signal(syscall.SIGTERM)
	select {
	case <-e.restartedDone:
		return nil
	case <-time.After(30 * time.Second):
		e.restarted.Process.Kill()
		<-e.restartedDone
		return errors.New("restarted kube-apiserver did not stop on SIGTERM in 30 s")
	}
}

// APIServerProcess finds the kube-apiserver serving host (https://IP:PORT)
// among the machine's processes (/proc/PID/cmdline) and returns its PID and
// command line. Errors: none serves that port, or host is not a URL.
func APIServerProcess(host string) (int, []string, error) {
	u, err := url.Parse(host)
	if err != nil {
		return 0, nil, err
	}
	port := u.Port()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, err
	}
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", ent.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(argv[0]) != "kube-apiserver" {
			continue
		}
		for i, a := range argv {
			if a == "--secure-port="+port || a == "--secure-port" && i+1 < len(argv) && argv[i+1] == port {
				return pid, argv, nil
			}
		}
	}
	return 0, nil, fmt.Errorf("no kube-apiserver process serving %s", host)
}
