// Package scangen builds labelled container images for testing and
// benchmarking coffer scan: several layers of realistic filler (code, logs,
// binaries, archives) with synthetic secrets planted in every place secrets
// hide, decoys that must stay quiet, and the ground truth of both.
//
// Everything comes from a seeded RNG: the same Options give the same image
// byte for byte, and no credential literal lives in the source.
package scangen

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"time"
)

// Sizes of filler for the two standard images.
const (
	SmallFiller = 3 << 20
	LargeFiller = 300 << 20
)

// Options choose the image.
type Options struct {
	Seed   uint64
	Filler int64 // bytes of filler across the layers; SmallFiller if 0
	Gzip   bool  // gzip the layers (docker save writes them uncompressed)
	Tag    string
	// Layout picks the image: 1 (default) a Python/JavaScript web app on
	// Debian; 2 a different stack (JVM, Rails, Node, infrastructure tools)
	// with other kinds of secrets and decoys in other places. The layout
	// does not depend on the seed; the seed picks values and filler.
	Layout int
}

// Label is one planted secret or decoy.
type Label struct {
	Rule  string `json:"rule"`           // the rule expected to find it ("" for a decoy)
	Kind  string `json:"kind,omitempty"` // what it is, e.g. "terraform-state"; Rule if empty
	Where string `json:"where"`          // hiding place, e.g. "deleted", "nested-archive"
	Layer int    `json:"layer"`          // -1: image config
	Path  string `json:"path"`           // as the scanner reports it
	Line  int    `json:"line"`           // 1-based; 0 in binaries
	// Status the scanner should report: "deleted in layer N",
	// "overwritten in layer N" or "".
	Status string `json:"status,omitempty"`
}

// Truth is the ground truth of a generated image.
type Truth struct {
	Secrets []Label `json:"secrets"`
	Decoys  []Label `json:"decoys"`
	// LayerBytes is the size of each uncompressed layer tar.
	LayerBytes []int64 `json:"layerBytes"`
}

// Kinds counts the distinct kinds of the planted secrets.
func (t *Truth) Kinds() int {
	k := map[string]bool{}
	for _, s := range t.Secrets {
		k[s.KindName()] = true
	}
	return len(k)
}

// KindName is the label's kind, or its rule.
func (l Label) KindName() string {
	if l.Kind != "" {
		return l.Kind
	}
	return l.Rule
}

type file struct {
	path string
	data []byte
	mode int64
}

// builder accumulates layers, config and truth.
type builder struct {
	o       Options
	r       *rand.Rand
	f       forge
	fill    *filler
	layers  [][]file
	env     []string
	history []string
	labels  map[string]string
	truth   Truth
	kind    string // kind of the next label
}

func (b *builder) imageLabels() map[string]string {
	if b.labels != nil {
		return b.labels
	}
	return map[string]string{"org.opencontainers.image.source": "https://git.corp.internal/team/app"}
}

// WriteDockerArchive writes the image as a `docker save` tarball to w.
func WriteDockerArchive(w io.Writer, o Options) (*Truth, error) {
	b := newBuilder(o)
	b.plan()
	return b.write(w)
}

// WriteFile writes the image to path and its truth to path + ".truth.json".
func WriteFile(path string, o Options) (*Truth, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	t, err := WriteDockerArchive(f, o)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	tj, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return nil, err
	}
	return t, os.WriteFile(path+".truth.json", tj, 0o644)
}

func newBuilder(o Options) *builder {
	if o.Filler <= 0 {
		o.Filler = SmallFiller
	}
	if o.Tag == "" {
		o.Tag = "coffer-scangen/test:latest"
	}
	if o.Layout == 0 {
		o.Layout = 1
	}
	r := rand.New(rand.NewPCG(o.Seed, 0xC0FFEE))
	f := forge{r}
	return &builder{o: o, r: r, f: f, fill: &filler{r: r, f: f}}
}

func (b *builder) add(layer int, path string, data []byte) {
	for len(b.layers) <= layer {
		b.layers = append(b.layers, nil)
	}
	b.layers[layer] = append(b.layers[layer], file{path: path, data: data, mode: 0o644})
}

// lineOf returns the 1-based line at which needle starts in data.
func lineOf(data, needle string) int {
	i := strings.Index(data, needle)
	if i < 0 {
		panic("scangen: needle not in data") // a bug in the plan, not input
	}
	return 1 + strings.Count(data[:i], "\n")
}

// secret plants content (which holds value) at path and labels it.
func (b *builder) secret(layer int, path, content, value, rule, where string) {
	b.add(layer, path, []byte(content))
	b.label(layer, path, lineOf(content, value), rule, where)
}

func (b *builder) label(layer int, path string, line int, rule, where string) {
	b.truth.Secrets = append(b.truth.Secrets, Label{Rule: rule, Kind: b.kind, Where: where, Layer: layer, Path: path, Line: line})
	b.kind = ""
}

// secretK is secret with a kind.
func (b *builder) secretK(kind string, layer int, path, content, value, rule, where string) {
	b.kind = kind
	b.secret(layer, path, content, value, rule, where)
}

// labelK is label with a kind.
func (b *builder) labelK(kind string, layer int, path string, line int, rule, where string) {
	b.kind = kind
	b.label(layer, path, line, rule, where)
}

// decoy plants content at path; the decoy sits on the line holding marker.
func (b *builder) decoy(layer int, path, content, marker, where string) {
	b.add(layer, path, []byte(content))
	b.truth.Decoys = append(b.truth.Decoys, Label{Where: where, Layer: layer, Path: path, Line: lineOf(content, marker)})
}

// inCode buries line among generated code, about half way down.
func (b *builder) inCode(tmpl []string, size int, line string) string {
	head := b.fill.code(tmpl, size/2)
	tail := b.fill.code(tmpl, size/2)
	return string(head) + line + "\n" + string(tail)
}

type layerBlob struct {
	diffID string
	data   []byte // as stored: tar or gzipped tar
}

func (b *builder) write(w io.Writer) (*Truth, error) {
	var blobs []layerBlob
	epoch := time.Unix(1700000000, 0)
	for _, files := range b.layers {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		dirs := map[string]bool{}
		for _, f := range files {
			// parent directories, as real layers have them
			parts := strings.Split(f.path, "/")
			for i := 1; i < len(parts); i++ {
				d := strings.Join(parts[:i], "/") + "/"
				if !dirs[d] {
					dirs[d] = true
					if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch}); err != nil {
						return nil, err
					}
				}
			}
			hdr := &tar.Header{Name: f.path, Typeflag: tar.TypeReg, Mode: f.mode, Size: int64(len(f.data)), ModTime: epoch}
			if err := tw.WriteHeader(hdr); err != nil {
				return nil, err
			}
			if _, err := tw.Write(f.data); err != nil {
				return nil, err
			}
		}
		if err := tw.Close(); err != nil {
			return nil, err
		}
		sum := sha256.Sum256(buf.Bytes())
		lb := layerBlob{diffID: "sha256:" + hex.EncodeToString(sum[:]), data: buf.Bytes()}
		b.truth.LayerBytes = append(b.truth.LayerBytes, int64(buf.Len()))
		if b.o.Gzip {
			var z bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
			if _, err := zw.Write(buf.Bytes()); err != nil {
				return nil, err
			}
			if err := zw.Close(); err != nil {
				return nil, err
			}
			lb.data = z.Bytes()
		}
		blobs = append(blobs, lb)
	}
	// history secrets were numbered among the extra entries; the scanner
	// counts lines over all entries, one per layer first.
	for i := range b.truth.Secrets {
		if s := &b.truth.Secrets[i]; s.Path == "config:history" {
			s.Line += len(blobs)
		}
	}
	cfg, err := b.config(blobs)
	if err != nil {
		return nil, err
	}
	cfgSum := sha256.Sum256(cfg)
	cfgName := hex.EncodeToString(cfgSum[:]) + ".json"

	tw := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := put(cfgName, cfg); err != nil {
		return nil, err
	}
	var layerNames []string
	for _, lb := range blobs {
		n := strings.TrimPrefix(lb.diffID, "sha256:") + "/layer.tar"
		layerNames = append(layerNames, n)
		if err := put(n, lb.data); err != nil {
			return nil, err
		}
	}
	manifest, err := json.Marshal([]map[string]any{{
		"Config": cfgName, "RepoTags": []string{b.o.Tag}, "Layers": layerNames,
	}})
	if err != nil {
		return nil, err
	}
	if err := put("manifest.json", manifest); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return &b.truth, nil
}

func (b *builder) config(blobs []layerBlob) ([]byte, error) {
	diffIDs := make([]string, len(blobs))
	for i, lb := range blobs {
		diffIDs[i] = lb.diffID
	}
	type hist struct {
		Created    string `json:"created"`
		CreatedBy  string `json:"created_by"`
		EmptyLayer bool   `json:"empty_layer,omitempty"`
	}
	var history []hist
	// one history entry per layer, then the empty ones (ENV, ARG, CMD)
	for i := range blobs {
		history = append(history, hist{Created: "2024-03-01T00:00:00Z", CreatedBy: fmt.Sprintf("COPY layer-%d / # buildkit", i)})
	}
	for _, h := range b.history {
		history = append(history, hist{Created: "2024-03-01T00:00:00Z", CreatedBy: h, EmptyLayer: true})
	}
	cfg := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      "2024-03-01T00:00:00Z",
		"config": map[string]any{
			"Env":        b.env,
			"Cmd":        []string{"/usr/local/bin/app-server"},
			"WorkingDir": "/app",
			"Labels":     b.imageLabels(),
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": diffIDs},
		"history": history,
	}
	return json.Marshal(cfg)
}
