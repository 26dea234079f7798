// Command lmimages builds lanmonitor's container images without Docker or
// a registry (`make images`): each image is one tar layer holding one
// static binary (CGO_ENABLED=0), with its Entrypoint, OS linux and
// architecture amd64, made with github.com/google/go-containerregistry and
// written as a docker-archive tarball that `ctr images import` reads. With
// a local cluster up (hack/cluster), the tarballs are imported into its
// containerd's k8s.io namespace, where kubelet finds them for
// imagePullPolicy: Never.
//
//	lmimages [-out bin/images] [-tag dev] [-version V] [-import auto|always|never]
//	lmimages -pause [-out bin/images]    the cluster's pod sandbox image
//
// Images: docker.io/library/lanmonitor-controller:<tag>,
// docker.io/library/lanmonitor-agent:<tag> (and lanmonitor-pause:v1). The
// binaries carry -X internal/version.Version=<version> (default: the tag),
// so two tags built from one tree still differ.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/lanmonitor/lanmonitor/hack/cluster/localcluster"
)

// Repository is where the images are named: the fully qualified form of
// a bare "lanmonitor-agent" that containerd (and kubelet) resolve.
const Repository = "docker.io/library/"

// image describes one image to build.
type image struct {
	name    string // repository name, e.g. lanmonitor-agent
	pkg     string // Go package of the binary
	binary  string // file name in the image (at /)
	user    string // config User ("" for root)
	version bool   // stamp internal/version.Version
}

var (
	controller = image{name: "lanmonitor-controller", pkg: "./cmd/lanmonitor-controller", binary: "lanmonitor-controller", user: "65532:65532", version: true}
	agent      = image{name: "lanmonitor-agent", pkg: "./cmd/lanmonitor-agent", binary: "lanmonitor-agent", version: true}
	pause      = image{name: "lanmonitor-pause", pkg: "./hack/images/pause", binary: "pause"}
)

func main() {
	out := flag.String("out", "bin/images", "directory for the image tarballs")
	tag := flag.String("tag", "dev", "image tag of lanmonitor-controller and lanmonitor-agent")
	version := flag.String("version", "", "version stamped into the binaries (default: the tag)")
	only := flag.String("only", "controller,agent", "images to build: controller, agent (comma-separated)")
	imp := flag.String("import", "auto", "import into the local cluster's containerd: auto (if it runs), always, never")
	doPause := flag.Bool("pause", false, "build the cluster's pause image "+localcluster.PauseImage+" instead")
	flag.Parse()
	if *version == "" {
		*version = *tag
	}
	var imgs []image
	var refs []string
	if *doPause {
		imgs = []image{pause}
		_, t, _ := strings.Cut(strings.TrimPrefix(localcluster.PauseImage, Repository), ":")
		*tag = t
	} else {
		for _, o := range strings.Split(*only, ",") {
			switch strings.TrimSpace(o) {
			case "controller":
				imgs = append(imgs, controller)
			case "agent":
				imgs = append(imgs, agent)
			default:
				fatalf("-only: unknown image %q", o)
			}
		}
	}
	t0 := time.Now()
	files, err := build(imgs, *out, *tag, *version)
	if err != nil {
		fatalf("%v", err)
	}
	for i, f := range files {
		refs = append(refs, Repository+imgs[i].name+":"+*tag)
		fmt.Fprintf(os.Stderr, "images: %s -> %s\n", refs[i], f)
	}
	fmt.Fprintf(os.Stderr, "images: built in %.1fs\n", time.Since(t0).Seconds())
	if *doPause {
		return
	}
	switch *imp {
	case "never":
		return
	case "auto":
		if _, ok := localcluster.Running(); !ok {
			fmt.Fprintln(os.Stderr, "images: no local cluster up (make cluster-up): tarballs written, import skipped")
			return
		}
	case "always":
	default:
		fatalf("-import: want auto, always or never")
	}
	for i, f := range files {
		if err := Import(f); err != nil {
			fatalf("%v", err)
		}
		fmt.Fprintf(os.Stderr, "images: imported %s into %s (namespace %s)\n", refs[i], localcluster.ContainerdSocket, localcluster.ContainerdNamespace)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "images: "+format+"\n", args...)
	os.Exit(1)
}

// Import imports a tarball into the local cluster's containerd.
func Import(tarPath string) error {
	out, err := exec.Command("ctr", "--address", localcluster.ContainerdSocket, "-n", localcluster.ContainerdNamespace,
		"images", "import", tarPath).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import %s: %v\n%s", tarPath, err, out)
	}
	return nil
}

// build compiles the binaries (static, linux/amd64) and writes one image
// tarball per image into out; it returns the tarballs' paths.
func build(imgs []image, out, tag, version string) ([]string, error) {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	binDir, err := os.MkdirTemp("", "lmimages-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(binDir)
	args := []string{"build", "-trimpath", "-o", binDir + "/",
		"-ldflags", "-s -w -X github.com/lanmonitor/lanmonitor/internal/version.Version=" + version}
	for _, im := range imgs {
		args = append(args, im.pkg)
	}
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go %s: %w", strings.Join(args, " "), err)
	}
	var files []string
	for _, im := range imgs {
		bin, err := os.ReadFile(filepath.Join(binDir, filepath.Base(im.pkg)))
		if err != nil {
			return nil, err
		}
		img, err := Image(im.binary, bin, im.user, map[string]string{
			"org.opencontainers.image.title":   im.name,
			"org.opencontainers.image.version": version,
			"org.opencontainers.image.source":  "https://github.com/lanmonitor/lanmonitor",
		})
		if err != nil {
			return nil, err
		}
		ref, err := name.NewTag(Repository + im.name + ":" + tag)
		if err != nil {
			return nil, err
		}
		path := filepath.Join(out, im.name+"-"+tag+".tar")
		if err := tarball.WriteToFile(path+".tmp", ref, img); err != nil {
			return nil, fmt.Errorf("write %s: %w", path, err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			return nil, err
		}
		files = append(files, path)
	}
	return files, nil
}

// Image makes an image of one layer holding binary at /<file> (mode
// 0755, owned by root) with Entrypoint [/<file>], OS linux, architecture
// amd64, the given User and labels.
func Image(file string, binary []byte, user string, labels map[string]string) (v1.Image, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: file, Mode: 0o755, Size: int64(len(binary)), Typeflag: tar.TypeReg,
		ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(binary); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerBytes)), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = []string{"/" + file}
	cf.Config.User = user
	cf.Config.WorkingDir = "/"
	cf.Config.Labels = labels
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	if _, err := img.Digest(); err != nil {
		return nil, errors.Join(errors.New("image digest"), err)
	}
	return img, nil
}
