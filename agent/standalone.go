package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/lanmonitor/lanmonitor/internal/crdvalidate"
)

// StandaloneOptions configure RunStandalone.
type StandaloneOptions struct {
	// Interface to monitor (required).
	Interface string
	// Files hold LanMonitor and IPBlock manifests; they are watched and
	// reloaded when they change.
	Files []string
	// Serving says where and how the HTTP API is served (default
	// DefaultListen, plain HTTP: loopback only, unless a token file or
	// Insecure is set).
	Serving Serving
	// KeepOnExit leaves the program attached and pinned when ctx ends, for
	// the next agent (an upgrade) to adopt, instead of cleaning up.
	KeepOnExit bool
	// Manager options (pin root, network namespace, map sizes, logger).
	Manager Options
}

// DefaultListen is the standalone API's default address.
const DefaultListen = "127.0.0.1:9470"

// reloadDelay groups the bursts of events an editor makes when saving.
const reloadDelay = 200 * time.Millisecond

// RunStandalone is `lanmonitor-agent standalone`: it validates the manifest
// files, binds the API address, attaches to the interface and serves the
// local API until ctx is cancelled (SIGTERM), then detaches, unpins and
// restores promiscuity (unless KeepOnExit). A changed file is reloaded; an invalid one is
// reported (naming the file, object and field) and the previous
// configuration stays in force. IPBlocks are lifted at their expiresAt
// (wall clock, looked at least once a minute, so a clock step or a suspend
// delays it by a minute at most), and a block once lifted is not enforced
// again if the clock steps back (see expiry.go).
//
// Errors before attaching (bad files, address in use, missing interface,
// missing privileges, another XDP program on the interface) are returned
// with nothing changed on the machine.
func RunStandalone(ctx context.Context, o StandaloneOptions) error {
	o.Manager.setDefaults()
	log := o.Manager.Logger
	if o.Interface == "" {
		return errors.New("--interface is required")
	}
	if len(o.Files) == 0 {
		return errors.New("at least one -f FILE with LanMonitor/IPBlock manifests is required")
	}
	if len(o.Serving.Listen) == 0 {
		o.Serving.Listen = []string{DefaultListen}
	}
	guard, err := o.Serving.standaloneGuard(log)
	if err != nil {
		return err
	}
	v, err := NewValidator()
	if err != nil {
		return err
	}
	lifted := liftedBlocks{}
	cfg, nextExpiry, err := loadStandalone(v, o, time.Now(), lifted)
	if err != nil {
		return err
	}
	watcher, err := watchFiles(o.Files)
	if err != nil {
		return err
	}
	defer watcher.Close()
	lns, err := o.Serving.bind()
	if err != nil {
		return err
	}
	defer closeListeners(lns)

	m, err := Start(cfg, o.Manager)
	if err != nil {
		return err
	}
	// Decoding, validating and syncing a large blocklist (100k CIDRs)
	// needs several times the memory the result keeps: give it back now.
	TuneMemoryLimit()
	managers := func() []*Manager { return []*Manager{m} }
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(managers), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := o.Serving.start(ctx, log, lns, NewHandler(managers, reg, func() error { return readiness(m) }), guard)
	if err != nil {
		m.Close(true)
		return err
	}
	log.Info("standalone agent running", "interface", o.Interface, "listen", lns[0].Addr().String(), "scheme", srv.scheme(),
		"files", o.Files, "blocks", len(cfg.Blocks))

	expiry := expiryTimer(time.Now(), nextExpiry)
	var debounce <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			srv.shutdown()
			err := m.Close(!o.KeepOnExit)
			switch {
			case err != nil:
			case o.KeepOnExit:
				log.Info("stopped: program left attached and pinned for the next agent", "interface", o.Interface)
			default:
				log.Info("stopped: program detached, pins removed, promiscuity restored", "interface", o.Interface)
			}
			return err
		case err := <-srv.errs:
			m.Close(true)
			return fmt.Errorf("serve api: %w", err)
		case ev := <-watcher.Events:
			if watched(o.Files, ev.Name) {
				debounce = time.After(reloadDelay)
			}
		case err := <-watcher.Errors:
			log.Error("watch manifest files", "error", err)
		case <-debounce:
			nextExpiry = reload(v, o, m, log, nextExpiry, lifted)
			expiry = expiryTimer(time.Now(), nextExpiry)
		case <-expiry:
			if now := time.Now(); now.Before(nextExpiry) {
				// A capped wake-up, or the clock stepped back: not due yet.
				expiry = expiryTimer(now, nextExpiry)
			} else {
				nextExpiry = reload(v, o, m, log, nextExpiry, lifted)
				expiry = expiryTimer(time.Now(), nextExpiry)
			}
		}
	}
}

// loadStandalone reads the files into a Config, leaving out the blocks
// expired at now or lifted before.
func loadStandalone(v *crdvalidate.Validator, o StandaloneOptions, now time.Time, lifted liftedBlocks) (Config, time.Time, error) {
	mf, err := LoadManifests(v, o.Files)
	if err != nil {
		return Config{}, time.Time{}, err
	}
	return standaloneConfig(o.Interface, mf, now, o.Manager.MaxRules, lifted)
}

// reload applies the files again; on any error the running configuration
// stays and the error is logged. It returns the next expiry to wait for.
func reload(v *crdvalidate.Validator, o StandaloneOptions, m *Manager, log *slog.Logger, prevExpiry time.Time, lifted liftedBlocks) time.Time {
	cfg, next, err := loadStandalone(v, o, time.Now(), lifted)
	if err == nil {
		err = m.Apply(cfg)
	}
	if err != nil {
		log.Error("configuration not reloaded; the previous one stays in force", "error", err)
		return prevExpiry
	}
	log.Info("configuration reloaded", "blocks", len(cfg.Blocks))
	TuneMemoryLimit()
	return next
}

func readiness(m *Manager) error {
	if state, msg := m.State(); state != StateAttached {
		return fmt.Errorf("%s: %s", state, msg)
	}
	return nil
}

// watchFiles watches the directories of files, so that editors that
// replace a file (write to a temporary file, rename) are seen too.
func watchFiles(files []string) (*fsnotify.Watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch files: %w", err)
	}
	var dirs []string
	for _, f := range files {
		dirs = append(dirs, filepath.Dir(f))
	}
	slices.Sort(dirs)
	for _, d := range slices.Compact(dirs) {
		if err := w.Add(d); err != nil {
			w.Close()
			return nil, fmt.Errorf("watch %s: %w", d, err)
		}
	}
	return w, nil
}

func watched(files []string, name string) bool {
	for _, f := range files {
		if filepath.Clean(f) == filepath.Clean(name) {
			return true
		}
	}
	return false
}

// expiryTimer fires when the next expiry (wall clock) may have come: at
// most maxIdle after now, since a timer sees no clock step or suspend
// (expiryWait); never when next is zero. A next that has passed already is
// left from a reload that failed: it is tried again after retryEvery.
func expiryTimer(now, next time.Time) <-chan time.Time {
	switch {
	case next.IsZero():
		return nil
	case !now.Before(next):
		return time.After(retryEvery)
	}
	return time.After(expiryWait(now, next))
}
