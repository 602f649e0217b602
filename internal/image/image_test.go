package image

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"coffer/internal/dockertest"
)

// staticBinary builds a tiny static program that prints its uid and args.
func staticBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	os.WriteFile(src, []byte(`package main

import (
	"fmt"
	"os"
)

func main() { fmt.Println("uid", os.Getuid(), "args", os.Args[1:]) }
`), 0o644)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.22\n"), 0o644)
	bin := filepath.Join(dir, "hello")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestBuildIsReproducibleAndRefusesDynamicBinaries(t *testing.T) {
	bin := staticBinary(t)
	s := Spec{Binary: bin, Path: "/usr/local/bin/hello", Args: []string{"--x"}, UID: 65532}
	a, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(s)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("two builds of one binary: %s and %s", da, db)
	}
	cfg, _ := a.ConfigFile()
	if cfg.Config.User != "65532:65532" || cfg.Config.Entrypoint[0] != "/usr/local/bin/hello" {
		t.Fatalf("config: %+v", cfg.Config)
	}
	if _, err := Build(Spec{Binary: "/bin/ls", Path: "/ls"}); err == nil || !strings.Contains(err.Error(), "static") {
		t.Fatalf("a dynamic binary: %v", err)
	}
	// The OCI archive names the image for ctr.
	dir := t.TempDir()
	p := filepath.Join(dir, "hello.oci.tar")
	if err := WriteOCI(p, "coffer/hello:test", a); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("tar", "-xOf", p, "index.json").Output()
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		Manifests []struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(out, &idx); err != nil || len(idx.Manifests) != 1 || idx.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "coffer/hello:test" {
		t.Fatalf("index.json: %v %s", err, out)
	}
}

// The docker-archive loads into the real engine and runs as the user the
// spec names, with no base image.
func TestImageRunsInDocker(t *testing.T) {
	d := dockertest.Require(t)
	img, err := Build(Spec{Binary: staticBinary(t), Path: "/usr/local/bin/hello", Args: []string{"--ok"}, UID: 65532})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "hello.docker.tar")
	ref := "coffer-test/image-hello:test"
	if err := WriteDocker(p, ref, img); err != nil {
		t.Fatal(err)
	}
	if out, err := d.Docker(t, "load", "-i", p); err != nil {
		t.Fatalf("docker load: %v %s", err, out)
	}
	t.Cleanup(func() { d.Docker(t, "rmi", "-f", ref) })
	out, err := d.Docker(t, "run", "--rm", "--network", "none", ref)
	if err != nil || strings.TrimSpace(out) != "uid 65532 args [--ok]" {
		t.Fatalf("docker run: %v %q", err, out)
	}
}
