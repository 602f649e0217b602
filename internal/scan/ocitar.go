package scan

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// maxManifest bounds the JSON documents (index, manifest, config) read from
// an OCI tar into memory.
const maxManifest = 8 << 20

// ociTar reads an OCI image layout packed in a tar file in place: one pass
// indexes where each file's bytes are, blobs are then read as sections.
type ociTar struct {
	f       *os.File
	entries map[string]section
}

type section struct{ off, size int64 }

var (
	_ v1.ImageIndex               = (*ociTarIndex)(nil)
	_ partial.CompressedImageCore = (*ociTarImage)(nil)
	_ partial.CompressedLayer     = (*ociTarLayer)(nil)
)

// openOCITar indexes the tar at p and returns its top-level index.
func openOCITar(p string) (*ociTarIndex, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	t := &ociTar{f: f, entries: map[string]section{}}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			f.Close()
			return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		if hdr.Typeflag != tar.TypeReg { // archive/tar reads old TypeRegA entries as TypeReg
			continue
		}
		off, err := f.Seek(0, io.SeekCurrent)
		if err != nil {
			f.Close()
			return nil, err
		}
		t.entries[strings.TrimPrefix(hdr.Name, "./")] = section{off, hdr.Size}
	}
	raw, err := t.read("index.json")
	if err != nil {
		f.Close()
		return nil, err
	}
	return &ociTarIndex{t: t, raw: raw}, nil
}

func (t *ociTar) open(name string) (*io.SectionReader, error) {
	s, ok := t.entries[name]
	if !ok {
		return nil, fmt.Errorf("%w: %s missing from the OCI tar", ErrCorrupt, name)
	}
	st, err := t.f.Stat()
	if err != nil {
		return nil, err
	}
	if s.off+s.size > st.Size() {
		return nil, fmt.Errorf("%w: %s: truncated", ErrCorrupt, name)
	}
	return io.NewSectionReader(t.f, s.off, s.size), nil
}

func (t *ociTar) read(name string) ([]byte, error) {
	sr, err := t.open(name)
	if err != nil {
		return nil, err
	}
	if sr.Size() > maxManifest {
		return nil, fmt.Errorf("%w: %s: %d bytes is too large for JSON", ErrCorrupt, name, sr.Size())
	}
	return io.ReadAll(sr)
}

func blobName(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// readBlob reads a JSON blob and checks its digest.
func (t *ociTar) readBlob(h v1.Hash) ([]byte, error) {
	b, err := t.read(blobName(h))
	if err != nil {
		return nil, err
	}
	if h.Algorithm == "sha256" {
		sum := sha256.Sum256(b)
		if hex.EncodeToString(sum[:]) != h.Hex {
			return nil, fmt.Errorf("%w: blob %s", ErrDigestMismatch, h)
		}
	}
	return b, nil
}

type ociTarIndex struct {
	t   *ociTar
	raw []byte
}

func (i *ociTarIndex) Close() error { return i.t.f.Close() }

func (i *ociTarIndex) MediaType() (types.MediaType, error) {
	m, err := i.IndexManifest()
	if err != nil {
		return "", err
	}
	if m.MediaType != "" {
		return m.MediaType, nil
	}
	return types.OCIImageIndex, nil
}

func (i *ociTarIndex) Digest() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(i.raw))
	return h, err
}

func (i *ociTarIndex) Size() (int64, error)         { return int64(len(i.raw)), nil }
func (i *ociTarIndex) RawManifest() ([]byte, error) { return i.raw, nil }

func (i *ociTarIndex) IndexManifest() (*v1.IndexManifest, error) {
	return v1.ParseIndexManifest(bytes.NewReader(i.raw))
}

func (i *ociTarIndex) Image(h v1.Hash) (v1.Image, error) {
	raw, err := i.t.readBlob(h)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: manifest %s: %w", ErrCorrupt, h, err)
	}
	return partial.CompressedToImage(&ociTarImage{t: i.t, raw: raw, m: m})
}

func (i *ociTarIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	raw, err := i.t.readBlob(h)
	if err != nil {
		return nil, err
	}
	return &ociTarIndex{t: i.t, raw: raw}, nil
}

type ociTarImage struct {
	t   *ociTar
	raw []byte
	m   *v1.Manifest
}

func (im *ociTarImage) RawConfigFile() ([]byte, error) { return im.t.readBlob(im.m.Config.Digest) }
func (im *ociTarImage) RawManifest() ([]byte, error)   { return im.raw, nil }

func (im *ociTarImage) MediaType() (types.MediaType, error) {
	if im.m.MediaType != "" {
		return im.m.MediaType, nil
	}
	return types.OCIManifestSchema1, nil
}

func (im *ociTarImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, d := range im.m.Layers {
		if d.Digest == h {
			return &ociTarLayer{t: im.t, d: d}, nil
		}
	}
	if im.m.Config.Digest == h {
		return &ociTarLayer{t: im.t, d: im.m.Config}, nil
	}
	return nil, fmt.Errorf("%w: no layer %s in the manifest", ErrCorrupt, h)
}

type ociTarLayer struct {
	t *ociTar
	d v1.Descriptor
}

func (l *ociTarLayer) Digest() (v1.Hash, error)            { return l.d.Digest, nil }
func (l *ociTarLayer) Size() (int64, error)                { return l.d.Size, nil }
func (l *ociTarLayer) MediaType() (types.MediaType, error) { return l.d.MediaType, nil }

func (l *ociTarLayer) Compressed() (io.ReadCloser, error) {
	sr, err := l.t.open(blobName(l.d.Digest))
	if err != nil {
		return nil, err
	}
	return io.NopCloser(sr), nil
}
