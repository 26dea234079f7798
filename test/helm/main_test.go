// Package helm tests the Helm chart in charts/lanmonitor: helm lint, the
// values schema and guards, the exact security settings and RBAC rules of
// what it renders, its CRDs and controller RBAC against the generated ones in
// config/, and every rendered object against a real kube-apiserver
// (server-side dry-run, then a real helm install whose RBAC is exercised).
//
// It needs no root: helm comes from hack/tools.sh helm ($HELM overrides it),
// kube-apiserver and etcd from internal/testenv.
package helm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/lanmonitor/lanmonitor/internal/testenv"
)

// env is the API server shared by the tests of this package.
var env *testenv.Env

func TestMain(m *testing.M) { testenv.Main(m, &env) }

// release and namespace of the default renders, as the demo and the
// cluster scripts install the chart.
const (
	release   = "lanmonitor"
	namespace = "lanmonitor-system"
)

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error

	helmOnce sync.Once
	helmPath string
	helmErr  error

	helmHomeOnce sync.Once
	helmHome     string
)

// repoRoot is the directory holding go.mod.
func repoRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				rootErr = errors.New("go.mod not found above the working directory")
				return
			}
			dir = parent
		}
	})
	if rootErr != nil {
		t.Fatal(rootErr)
	}
	return rootDir
}

// chartDir is charts/lanmonitor.
func chartDir(t testing.TB) string { return filepath.Join(repoRoot(t), "charts", "lanmonitor") }

// helmBin returns $HELM, else the helm that hack/tools.sh builds and caches.
func helmBin(t testing.TB) string {
	t.Helper()
	helmOnce.Do(func() {
		if p := os.Getenv("HELM"); p != "" {
			helmPath = p
			return
		}
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(filepath.Join(repoRoot(t), "hack", "tools.sh"), "helm")
		cmd.Dir = repoRoot(t)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			helmErr = fmt.Errorf("hack/tools.sh helm (set HELM to skip it): %w\n%s", err, stderr.String())
			return
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		helmPath = strings.TrimSpace(lines[len(lines)-1])
	})
	if helmErr != nil {
		t.Fatal(helmErr)
	}
	return helmPath
}

// runHelm runs helm, with its configuration, cache and data (and the
// Kubernetes discovery cache) kept apart from the user's, and returns stdout
// and stderr.
func runHelm(t testing.TB, args ...string) (string, string, error) {
	t.Helper()
	bin := helmBin(t)
	helmHomeOnce.Do(func() {
		// One fixed directory, reused by every run (helm keeps next to
		// nothing there), next to the tools that hack/tools.sh caches.
		cache := os.Getenv("LANMONITOR_CACHE")
		if cache == "" {
			dir, err := os.UserCacheDir()
			if err != nil {
				dir = os.TempDir()
			}
			cache = filepath.Join(dir, "lanmonitor")
		}
		helmHome = filepath.Join(cache, "helm", "test-home")
	})
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(helmHome, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(helmHome, "config"),
		"HELM_DATA_HOME="+filepath.Join(helmHome, "data"),
		"KUBECACHEDIR="+filepath.Join(helmHome, "kube"),
	)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// template runs `helm template` on the chart and fails the test on error.
func template(t testing.TB, rel, ns string, args ...string) string {
	t.Helper()
	out, stderr, err := runHelm(t, append([]string{"template", rel, chartDir(t), "--namespace", ns}, args...)...)
	if err != nil {
		t.Fatalf("helm template %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return out
}

// templateError runs `helm template` on the chart, which must fail, and
// returns its error output.
func templateError(t testing.TB, args ...string) string {
	t.Helper()
	_, stderr, err := runHelm(t, append([]string{"template", release, chartDir(t), "--namespace", namespace}, args...)...)
	if err == nil {
		t.Fatalf("helm template %s succeeded, want an error", strings.Join(args, " "))
	}
	return stderr
}

// decode splits a multi-document YAML stream into objects. Every document
// must be strict YAML (no duplicate keys) and a Kubernetes object with
// apiVersion, kind and metadata.name; documents holding only comments are
// skipped.
func decode(t testing.TB, manifests string) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifests)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("read rendered YAML: %v", err)
		}
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			t.Fatalf("rendered YAML is invalid: %v\n%s", err, doc)
		}
		if string(bytes.TrimSpace(js)) == "null" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			t.Fatalf("rendered document is not a Kubernetes object: %v\n%s", err, doc)
		}
		if u.GetName() == "" {
			t.Fatalf("rendered %s has no metadata.name:\n%s", u.GetKind(), doc)
		}
		objs = append(objs, u)
	}
}

// find returns the only rendered object of kind whose name ends in suffix.
func find(t testing.TB, objs []*unstructured.Unstructured, kind, suffix string) *unstructured.Unstructured {
	t.Helper()
	var found *unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind && strings.HasSuffix(o.GetName(), suffix) {
			if found != nil {
				t.Fatalf("two %s named *%s: %s and %s", kind, suffix, found.GetName(), o.GetName())
			}
			found = o
		}
	}
	if found == nil {
		t.Fatalf("no %s named *%s rendered", kind, suffix)
	}
	return found
}

// count returns how many rendered objects are of kind.
func count(objs []*unstructured.Unstructured, kind string) int {
	n := 0
	for _, o := range objs {
		if o.GetKind() == kind {
			n++
		}
	}
	return n
}

// typed converts a rendered object into out, refusing unknown fields, so a
// misspelt field in a template fails here rather than being dropped.
func typed(t testing.TB, u *unstructured.Unstructured, out any) {
	t.Helper()
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, out, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
}
