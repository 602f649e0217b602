// Command coffer-images writes the container images of coffer-server and
// coffer-agent, built from the static binaries in --bin-dir with no base
// image and no registry (package internal/image): `make images`.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"coffer/internal/image"
	"coffer/internal/version"
)

func main() {
	binDir := flag.String("bin-dir", "bin", "directory holding the static coffer-server and coffer-agent")
	out := flag.String("out", "bin/images", "directory the archives are written to")
	repo := flag.String("repo", "coffer", "image repository prefix: REPO/coffer-server:TAG")
	tag := flag.String("tag", "dev", "image tag")
	format := flag.String("format", "both", "oci (ctr images import), docker (docker load) or both")
	flag.Parse()
	if err := run(*binDir, *out, *repo, *tag, *format); err != nil {
		fmt.Fprintln(os.Stderr, "coffer-images:", err)
		os.Exit(1)
	}
}

func run(binDir, out, repo, tag, format string) error {
	if format != "oci" && format != "docker" && format != "both" {
		return fmt.Errorf("--format %q: want oci, docker or both", format)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	labels := map[string]string{
		"org.opencontainers.image.title":   "",
		"org.opencontainers.image.version": version.Get().Version,
		"org.opencontainers.image.source":  "coffer",
	}
	for _, s := range []struct {
		name string
		uid  int
		args []string
	}{
		// The server runs as an unprivileged user; in a pod it listens on
		// the pod's address (the Service fronts it).
		{"coffer-server", 65532, []string{"--data-dir", "/var/lib/coffer", "--listen", "0.0.0.0:7443"}},
		// The agent needs root on the node: it enters containers' mount
		// namespaces (see deploy/kubernetes/coffer-agent.yaml).
		{"coffer-agent", 0, []string{"--runtime", "containerd", "--state-dir", "/var/lib/coffer-agent"}},
	} {
		l := map[string]string{}
		for k, v := range labels {
			l[k] = v
		}
		l["org.opencontainers.image.title"] = s.name
		img, err := image.Build(image.Spec{Binary: filepath.Join(binDir, s.name), Path: "/usr/local/bin/" + s.name, Args: s.args, UID: s.uid, Labels: l})
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		ref := fmt.Sprintf("%s/%s:%s", repo, s.name, tag)
		d, err := img.Digest()
		if err != nil {
			return err
		}
		if format != "docker" {
			p := filepath.Join(out, s.name+".oci.tar")
			if err := image.WriteOCI(p, ref, img); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			fmt.Printf("%s %s -> %s (ctr -n k8s.io images import %s)\n", ref, d, p, p)
		}
		if format != "oci" {
			p := filepath.Join(out, s.name+".docker.tar")
			if err := image.WriteDocker(p, ref, img); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			fmt.Printf("%s %s -> %s (docker load -i %s)\n", ref, d, p, p)
		}
	}
	return nil
}
