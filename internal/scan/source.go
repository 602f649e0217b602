package scan

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/moby/moby/client"
)

// OpenOptions tunes how OpenImage finds an image.
type OpenOptions struct {
	// Platform picks an image out of a multi-platform index; default
	// linux/GOARCH, else the first image.
	Platform *v1.Platform
	// Insecure allows plain HTTP to a registry (localhost always may).
	Insecure bool
	// Keychain resolves registry credentials; default authn.DefaultKeychain
	// (the docker config of the user).
	Keychain authn.Keychain
	// Transport for registry requests; nil: the default.
	Remote []remote.Option
}

// OpenImage resolves target to an image:
//
//   - docker://NAME[:TAG]: an image in the local Docker engine
//   - a path to a `docker save` tarball, an OCI image layout directory, or an
//     OCI layout tar (oci:PATH and docker-archive:PATH force the kind)
//   - anything else: a registry reference (registry://REF forces it)
//
// The returned close function releases what the image holds open.
func OpenImage(ctx context.Context, target string, o OpenOptions) (v1.Image, func() error, error) {
	nop := func() error { return nil }
	if o.Platform == nil {
		o.Platform = &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	switch {
	case strings.HasPrefix(target, "docker://"):
		return openDaemon(ctx, strings.TrimPrefix(target, "docker://"))
	case strings.HasPrefix(target, "registry://"):
		return openRemote(ctx, strings.TrimPrefix(target, "registry://"), o)
	case strings.HasPrefix(target, "oci:"):
		return openPath(strings.TrimPrefix(target, "oci:"), o)
	case strings.HasPrefix(target, "docker-archive:"):
		p := strings.TrimPrefix(target, "docker-archive:")
		img, err := tarball.ImageFromPath(p, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %w", ErrNotImage, p, err)
		}
		return img, nop, nil
	}
	if _, err := os.Stat(target); err == nil || looksLikePath(target) {
		return openPath(target, o)
	}
	return openRemote(ctx, target, o)
}

func openRemote(ctx context.Context, ref string, o OpenOptions) (v1.Image, func() error, error) {
	var nopts []name.Option
	if o.Insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %q is neither a file nor an image reference: %w", ErrNotImage, ref, err)
	}
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	opts := append([]remote.Option{
		remote.WithContext(ctx), remote.WithAuthFromKeychain(kc), remote.WithPlatform(*o.Platform),
	}, o.Remote...)
	img, err := remote.Image(r, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("registry: %w", err)
	}
	return img, func() error { return nil }, nil
}

// openPath opens a docker save tarball, an OCI layout directory or an OCI
// layout tar.
func openPath(p string, o OpenOptions) (v1.Image, func() error, error) {
	nop := func() error { return nil }
	st, err := os.Stat(p)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrNotImage, err)
	}
	if st.IsDir() {
		idx, err := layout.ImageIndexFromPath(p)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s is not an OCI layout: %w", ErrNotImage, p, err)
		}
		img, err := pickImage(idx, o.Platform, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", p, err)
		}
		return img, nop, nil
	}
	if st.Size() == 0 {
		return nil, nil, fmt.Errorf("%w: %s is empty", ErrNotImage, p)
	}
	names, err := tarNames(p)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrNotImage, p, err)
	}
	switch {
	case names["manifest.json"]:
		img, err := tarball.ImageFromPath(p, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %w", ErrNotImage, p, err)
		}
		return img, nop, nil
	case names["index.json"]:
		ot, err := openOCITar(p)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %w", ErrNotImage, p, err)
		}
		img, err := pickImage(ot, o.Platform, 0)
		if err != nil {
			_ = ot.Close()
			return nil, nil, fmt.Errorf("%s: %w", p, err)
		}
		return img, ot.Close, nil
	}
	return nil, nil, fmt.Errorf("%w: %s has neither manifest.json (docker save) nor index.json (OCI layout)", ErrNotImage, p)
}

// tarNames lists the top-level file names of a tar file.
func tarNames(p string) (map[string]bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names := map[string]bool{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names, nil
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			if len(names) == 0 {
				return nil, fmt.Errorf("not a tar file: %w", err)
			}
			return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		names[strings.TrimPrefix(hdr.Name, "./")] = true
	}
}

// pickImage chooses the image for platform out of an index (recursing into
// nested indexes): an exact OS/architecture match, else the first image.
func pickImage(idx v1.ImageIndex, platform *v1.Platform, depth int) (v1.Image, error) {
	if depth > 4 {
		return nil, fmt.Errorf("%w: indexes nested too deep", ErrNotImage)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotImage, err)
	}
	var first *v1.Descriptor
	for i := range im.Manifests {
		d := &im.Manifests[i]
		if !d.MediaType.IsImage() && !d.MediaType.IsIndex() {
			continue
		}
		if d.Platform != nil && d.Platform.OS == "unknown" {
			continue // attestation manifests
		}
		if first == nil {
			first = d
		}
		if d.Platform != nil && platform != nil && d.Platform.OS == platform.OS && d.Platform.Architecture == platform.Architecture {
			first = d
			break
		}
	}
	if first == nil {
		return nil, fmt.Errorf("%w: the index lists no image", ErrNotImage)
	}
	if first.MediaType.IsIndex() {
		child, err := idx.ImageIndex(first.Digest)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNotImage, err)
		}
		return pickImage(child, platform, depth+1)
	}
	img, err := idx.Image(first.Digest)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotImage, err)
	}
	return img, nil
}

// openDaemon saves an image of the local Docker engine (DOCKER_HOST and
// friends honoured) to a temporary tarball, removed by the close function,
// and reads it as a docker save tarball.
func openDaemon(ctx context.Context, ref string) (v1.Image, func() error, error) {
	if _, err := name.ParseReference(ref); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrNotImage, err)
	}
	cli, err := client.New(client.FromEnv) // negotiates the API version by default
	if err != nil {
		return nil, nil, fmt.Errorf("docker engine: %w", err)
	}
	defer cli.Close()
	rc, err := cli.ImageSave(ctx, []string{ref})
	if err != nil {
		return nil, nil, fmt.Errorf("docker engine: saving %s: %w", ref, err)
	}
	defer rc.Close()
	f, err := os.CreateTemp("", "coffer-scan-*.tar")
	if err != nil {
		return nil, nil, err
	}
	closeFn := func() error {
		err := f.Close()
		if rerr := os.Remove(f.Name()); err == nil {
			err = rerr
		}
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		_ = closeFn()
		return nil, nil, fmt.Errorf("docker engine: saving %s: %w", ref, err)
	}
	img, err := tarball.ImageFromPath(f.Name(), nil)
	if err != nil {
		_ = closeFn()
		return nil, nil, fmt.Errorf("%w: docker engine image %s: %w", ErrNotImage, ref, err)
	}
	return img, closeFn, nil
}

// ImageName returns the image reference a target names, when it names
// one: the NAME of docker://NAME and registry references, the first repo
// tag recorded in a docker save tarball; "" otherwise (OCI layouts).
func ImageName(target string) string {
	switch {
	case strings.HasPrefix(target, "docker://"):
		return strings.TrimPrefix(target, "docker://")
	case strings.HasPrefix(target, "registry://"):
		return strings.TrimPrefix(target, "registry://")
	case strings.HasPrefix(target, "oci:"):
		return ""
	}
	p := strings.TrimPrefix(target, "docker-archive:")
	if st, err := os.Stat(p); err == nil {
		if st.IsDir() {
			return ""
		}
		m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(p) })
		if err != nil || len(m) == 0 || len(m[0].RepoTags) == 0 {
			return ""
		}
		return m[0].RepoTags[0]
	}
	if looksLikePath(target) {
		return ""
	}
	return target
}

// looksLikePath tells a missing file from a registry reference, so that a
// typo in a file name is reported as such rather than as a registry error.
func looksLikePath(target string) bool {
	for _, p := range []string{"/", "./", "../", "~"} {
		if strings.HasPrefix(target, p) {
			return true
		}
	}
	for _, ext := range []string{".tar", ".tar.gz", ".tgz", ".oci"} {
		if strings.HasSuffix(target, ext) {
			return true
		}
	}
	return false
}
