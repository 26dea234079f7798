// Package testenv runs a real kube-apiserver and etcd (controller-runtime's
// envtest) with the lanmonitor CRDs installed, for tests that need the API
// server's real validation, defaulting, watches and status subresources.
//
// The binaries come from $KUBEBUILDER_ASSETS when it is set, else from
// `hack/tools.sh controlplane`, which builds them from the Go module proxy
// once and caches them outside the clone.
//
// Start one environment per test package, from TestMain:
//
//	var env *testenv.Env
//
//	func TestMain(m *testing.M) { testenv.Main(m, &env) }
package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	lanmonitorv1alpha1 "github.com/lanmonitor/lanmonitor/api/v1alpha1"
	"github.com/lanmonitor/lanmonitor/config/crd"
)

// Env is a running API server with the lanmonitor CRDs installed.
type Env struct {
	// Config reaches the API server as an administrator. Its client-side rate
	// limiter is off (QPS < 0), so tests are limited by the server only;
	// copy it with rest.CopyConfig before changing it.
	Config *rest.Config
	// Scheme knows the built-in types and lanmonitor.io/v1alpha1.
	Scheme *runtime.Scheme
	// Client is a direct (uncached) client using Config and Scheme.
	Client client.WithWatch

	env *envtest.Environment

	apiArgv       []string      // kube-apiserver's command line (StopAPIServer)
	restarted     *exec.Cmd     // the kube-apiserver of StartAPIServer
	restartedDone chan struct{} // closed when restarted exits
}

// Scheme returns a new scheme with the built-in types and lanmonitor.io/v1alpha1.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(lanmonitorv1alpha1.AddToScheme(s))
	return s
}

// Start starts kube-apiserver and etcd and installs the CRDs.
func Start() (*Env, error) {
	assets, err := binaryAssetsDirectory()
	if err != nil {
		return nil, err
	}
	crds, err := CRDs()
	if err != nil {
		return nil, err
	}
	te := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDs:                  crds,
		ErrorIfCRDPathMissing: true,
		// Two busy cores can make a cold start slow.
		ControlPlaneStartTimeout: time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	cfg, err := te.Start()
	if err != nil {
		return nil, fmt.Errorf("start kube-apiserver and etcd from %s: %w", assets, err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.QPS = -1
	scheme := Scheme()
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("create client: %w", err), te.Stop())
	}
	return &Env{Config: cfg, Scheme: scheme, Client: c, env: te}, nil
}

// Stop stops the API server and etcd and removes their data.
func (e *Env) Stop() error {
	if e.restarted != nil {
		e.stopRestarted()
	}
	if err := e.env.Stop(); err != nil {
		return fmt.Errorf("stop kube-apiserver and etcd: %w", err)
	}
	return nil
}

// Main is a TestMain body: it starts an Env into *env, runs the tests, stops
// the Env and exits with the tests' code. An interrupt (SIGINT, SIGTERM)
// also stops the Env, whose processes would otherwise outlive the test
// binary (envtest starts them in their own process group). A test that
// panics, or a `go test -timeout` that fires, still leaves them behind.
func Main(m *testing.M, env **Env) {
	e, err := Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		os.Exit(1)
	}
	*env = e
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "testenv: %v: stopping kube-apiserver and etcd\n", s)
		_ = e.Stop()
		os.Exit(1)
	}()
	code := m.Run()
	signal.Stop(sig)
	if err := e.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// CRDs returns the CustomResourceDefinitions embedded from config/crd/bases.
func CRDs() ([]*apiextensionsv1.CustomResourceDefinition, error) { return crd.All() }

// binaryAssetsDirectory returns $KUBEBUILDER_ASSETS, or else the directory
// printed by `hack/tools.sh controlplane` (the last line of its output).
func binaryAssetsDirectory() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	var stdout bytes.Buffer
	cmd := exec.Command(filepath.Join(root, "hack", "tools.sh"), "controlplane")
	cmd.Dir = root
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("hack/tools.sh controlplane (set KUBEBUILDER_ASSETS to skip it): %w", err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	dir := strings.TrimSpace(lines[len(lines)-1])
	if dir == "" {
		return "", errors.New("hack/tools.sh controlplane printed no directory")
	}
	return dir, nil
}

// repoRoot walks up from the working directory (a test's package directory)
// to the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}
