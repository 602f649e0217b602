package scan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ScanImage scans the config and every layer of img; target names it in the
// report. Layers are read concurrently, each as one stream.
func (s *Scanner) ScanImage(ctx context.Context, img v1.Image, target string) (*Report, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The raw config, not ConfigFile(): for docker:// images the latter is
	// rebuilt from the engine's API (history newest first, fields lost).
	raw, err := img.RawConfigFile()
	if err != nil {
		return nil, fmt.Errorf("%w: reading config: %w", ErrNotImage, err)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: parsing config: %w", ErrCorrupt, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("%w: listing layers: %w", ErrNotImage, err)
	}
	if len(layers) != len(cf.RootFS.DiffIDs) {
		return nil, fmt.Errorf("%w: %d layers but %d diff IDs in the config", ErrCorrupt, len(layers), len(cf.RootFS.DiffIDs))
	}

	r := s.newRun(ctx)
	r.layers.Store(int64(len(layers)))
	stop := make(chan struct{})
	go r.progress(stop)
	defer close(stop)

	r.config(cf)

	infos := make([]*layerInfo, len(layers))
	errs := make([]error, len(layers))
	sem := make(chan struct{}, s.cfg.Workers)
	var wg sync.WaitGroup
	for i, l := range layers {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			diff := cf.RootFS.DiffIDs[i]
			ref := &LayerRef{Index: i, Digest: diff.String()}
			want := ""
			if diff.Algorithm == "sha256" {
				want = diff.Hex
			} else {
				r.warn("layer %d: diff ID %s is not sha256; content not verified", i, diff)
			}
			rc, err := l.Uncompressed()
			if err != nil {
				errs[i] = fmt.Errorf("layer %d: %w: %w", i, ErrCorrupt, err)
				cancel()
				return
			}
			infos[i], errs[i] = r.readLayer(ref, rc, want)
			if cerr := rc.Close(); cerr != nil && errs[i] == nil {
				errs[i] = fmt.Errorf("layer %d: %w: %w", i, ErrCorrupt, cerr)
			}
			if errs[i] != nil {
				cancel()
			}
			r.layersDone.Add(1)
		}()
	}
	wg.Wait()
	rep := r.finish(target, "image")
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	settle(rep.Findings, infos)
	settle(rep.Low, infos)
	return rep, nil
}

// config scans the image config: environment, labels, entrypoint and build
// history (ARG and RUN lines often carry tokens). Each part is a virtual
// file, "config:env" and so on, one entry per line.
func (r *run) config(cf *v1.ConfigFile) {
	parts := []struct {
		name  string
		lines []string
	}{
		{"config:env", cf.Config.Env},
		{"config:labels", labelLines(cf.Config.Labels)},
		{"config:entrypoint", append(append([]string(nil), cf.Config.Entrypoint...), cf.Config.Cmd...)},
		{"config:history", historyLines(cf.History)},
	}
	for _, p := range parts {
		if len(p.lines) == 0 {
			continue
		}
		var sb strings.Builder
		for _, l := range p.lines {
			sb.WriteString(strings.ReplaceAll(l, "\n", " "))
			sb.WriteByte('\n')
		}
		data := []byte(sb.String())
		_ = r.submit(job{source: "config", path: p.name, data: data})
	}
}

func labelLines(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

func historyLines(h []v1.History) []string {
	out := make([]string, len(h))
	for i, e := range h {
		out[i] = e.CreatedBy
	}
	return out
}
