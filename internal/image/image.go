// Package image builds the container images of coffer-server and
// coffer-agent from their static binaries, with no base image and no
// registry: one layer holding the binary, /etc/passwd and /etc/group with
// the user it runs as, and an empty /tmp; written as an OCI image layout
// archive (ctr images import) or a docker-archive (docker load), both with
// go-containerregistry.
package image

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Spec describes one image.
type Spec struct {
	Binary string   // path of the static binary
	Path   string   // where it goes in the image, e.g. /usr/local/bin/coffer-server
	Args   []string // default arguments (CMD)
	UID    int      // the user it runs as (0: root)
	Labels map[string]string
	// Created is the image's creation time; zero means the Unix epoch, so
	// that the same binary makes the same image (a reproducible digest).
	Created time.Time
}

// Build makes the image of s.
func Build(s Spec) (v1.Image, error) {
	bin, err := os.ReadFile(s.Binary)
	if err != nil {
		return nil, err
	}
	if !isStatic(bin) {
		return nil, fmt.Errorf("%s is not a static ELF binary (build it with CGO_ENABLED=0): an image without a base has no C library", s.Binary)
	}
	user := "coffer"
	if s.UID == 0 {
		user = "root"
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := s.Created
	if epoch.IsZero() {
		epoch = time.Unix(0, 0).UTC()
	}
	dirs := []string{"etc", "tmp", "usr", "usr/local", "usr/local/bin", "run", "var", "var/lib", "var/lib/coffer"}
	for _, d := range dirs {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		uid := 0
		if d == "var/lib/coffer" {
			uid = s.UID
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"etc/passwd", 0o644, fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d:coffer:/var/lib/coffer:/sbin/nologin\n", user, s.UID, s.UID)},
		{"etc/group", 0o644, fmt.Appendf(nil, "root:x:0:\n%s:x:%d:\n", user, s.UID)},
		{strings.TrimPrefix(s.Path, "/"), 0o755, bin},
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerData := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerData)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = "amd64", "linux"
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.Entrypoint = []string{s.Path}
	cfg.Config.Cmd = s.Args
	cfg.Config.User = fmt.Sprintf("%d:%d", s.UID, s.UID)
	cfg.Config.WorkingDir = "/var/lib/coffer"
	cfg.Config.Labels = s.Labels
	cfg.Config.Env = []string{"PATH=/usr/local/bin"}
	return mutate.ConfigFile(img, cfg)
}

// isStatic reports whether b is an ELF binary without a program
// interpreter (PT_INTERP): one that needs no C library.
func isStatic(b []byte) bool {
	return len(b) > 4 && string(b[:4]) == "\x7fELF" && !bytes.Contains(b[:min(len(b), 4096)], []byte("/lib64/ld-linux"))
}

// WriteOCI writes img tagged ref as an OCI image layout archive (a tar of
// the layout, with the ref in org.opencontainers.image.ref.name), the
// format `ctr images import` and podman read.
func WriteOCI(path, ref string, img v1.Image) error {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref, "io.containerd.image.name": ref,
	})); err != nil {
		return err
	}
	return tarDir(path, dir)
}

// WriteDocker writes img tagged ref as a docker-archive (`docker load`,
// which Docker 20.10 needs; `ctr images import` reads it too).
func WriteDocker(path, ref string, img v1.Image) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(path, tag, img)
}

func tarDir(path, dir string) error {
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name, h.ModTime, h.Uid, h.Gid, h.Uname, h.Gname = filepath.ToSlash(rel), time.Time{}, 0, 0, "", ""
		if fi.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			_, err = io.Copy(tw, src)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path + ".tmp")
		return err
	}
	return os.Rename(path+".tmp", path)
}
