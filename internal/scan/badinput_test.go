package scan

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// entry is one tar member for building test layers.
type entry struct {
	name, link string
	typ        byte
	data       []byte
}

func layerTar(t testing.TB, es ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range es {
		typ := e.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: typ, Mode: 0o644, Size: int64(len(e.data))}
		if typ != tar.TypeReg {
			hdr.Size = 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// dockerArchive writes a docker save tarball of the layers; diffIDs are the
// layers' digests unless lie replaces them.
func dockerArchive(t testing.TB, layers [][]byte, lie map[int]string) string {
	t.Helper()
	var diffIDs, names []string
	for i, l := range layers {
		sum := sha256.Sum256(l)
		d := "sha256:" + hex.EncodeToString(sum[:])
		if v, ok := lie[i]; ok {
			d = v
		}
		diffIDs = append(diffIDs, d)
		names = append(names, "l"+string(rune('a'+i))+"/layer.tar")
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{}, "rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	man, _ := json.Marshal([]map[string]any{{"Config": "config.json", "RepoTags": []string{"t:1"}, "Layers": names}})
	var files []entry
	files = append(files, entry{name: "config.json", data: cfg})
	for i, l := range layers {
		files = append(files, entry{name: names[i], data: l})
	}
	files = append(files, entry{name: "manifest.json", data: man})
	p := filepath.Join(t.TempDir(), "image.tar")
	if err := os.WriteFile(p, layerTar(t, files...), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func gzipped(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return out.Bytes()
}

// token is a GitHub-format token built at run time.
func token() string { return "ghp_" + strings.Repeat("C0ffEe9x", 4) + "Zq7W" }

func TestBadInput(t *testing.T) {
	secret := []byte("GITHUB_TOKEN=" + token() + "\n")
	good := layerTar(t, entry{name: "app/.env", data: secret})

	truncated := good[:512+20] // cut inside the file's data; the config has the cut bytes' digest
	altered := bytes.Replace(good, []byte("GITHUB"), []byte("GITLAB"), 1)
	goodSum := sha256.Sum256(good)

	traversal := layerTar(t, entry{name: "../../etc/x", data: secret})
	loop := layerTar(t,
		entry{name: "a", typ: tar.TypeSymlink, link: "b"},
		entry{name: "b", typ: tar.TypeSymlink, link: "a"},
		entry{name: "dir/self", typ: tar.TypeSymlink, link: "."},
		entry{name: "app/.env", data: secret},
	)
	bomb := gzipped(make([]byte, 8<<20)) // 8 MiB of zeros in ~8 KiB
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	w, _ := zw.Create("zeros.txt")
	_, _ = w.Write(make([]byte, 8<<20))
	_ = zw.Close()
	bombs := layerTar(t,
		entry{name: "var/log/huge.log.gz", data: bomb},
		entry{name: "app/bomb.jar", data: zb.Bytes()},
		entry{name: "app/.env", data: secret},
	)

	zipOf := func(name string, data []byte) []byte {
		var b bytes.Buffer
		zw := zip.NewWriter(&b)
		w, _ := zw.Create(name)
		_, _ = w.Write(data)
		_ = zw.Close()
		return b.Bytes()
	}
	depth2 := zipOf("lib/inner.jar", zipOf("app.properties", secret))                            // found
	depth3 := zipOf("a.zip", zipOf("b.zip", zipOf("c.properties", secret)))                      // too deep
	tgzInZip := zipOf("bundle.tgz", gzipped(layerTar(t, entry{name: "etc/.env", data: secret}))) // found
	nesting := layerTar(t,
		entry{name: "app/outer.war", data: depth2},
		entry{name: "app/deep.zip", data: depth3},
		entry{name: "app/bundle.zip", data: tgzInZip},
	)

	empty := filepath.Join(t.TempDir(), "empty.tar")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(t.TempDir(), "junk.tar")
	if err := os.WriteFile(junk, bytes.Repeat([]byte("not a tar "), 100), 0o644); err != nil {
		t.Fatal(err)
	}
	cutImage := dockerArchive(t, [][]byte{good}, nil)
	if st, err := os.Stat(cutImage); err == nil {
		b, _ := os.ReadFile(cutImage)
		cut := filepath.Join(t.TempDir(), "cut.tar")
		_ = os.WriteFile(cut, b[:st.Size()*2/3], 0o644)
		cutImage = cut
	}

	for _, tc := range []struct {
		name    string
		target  string
		cfg     Config
		wantErr error // nil: the scan succeeds
		check   func(t *testing.T, rep *Report)
	}{
		{name: "0-byte image", target: empty, wantErr: ErrNotImage},
		{name: "not a tar", target: junk, wantErr: ErrNotImage},
		{name: "truncated image tarball", target: cutImage, wantErr: ErrNotImage},
		{name: "truncated layer", target: dockerArchive(t, [][]byte{truncated}, nil), wantErr: ErrCorrupt},
		{name: "truncated layer, original digest", target: dockerArchive(t, [][]byte{good[:1024]}, map[int]string{0: "sha256:" + hex.EncodeToString(goodSum[:])}), wantErr: ErrDigestMismatch},
		{name: "layer digest mismatch", target: dockerArchive(t, [][]byte{altered}, map[int]string{0: "sha256:" + hex.EncodeToString(goodSum[:])}), wantErr: ErrDigestMismatch},
		{name: "layer larger than the limit", target: dockerArchive(t, [][]byte{layerTar(t, entry{name: "big", data: make([]byte, 1<<20)})}, nil),
			cfg: Config{MaxLayerSize: 64 << 10}, wantErr: ErrTooLarge},
		{name: "path traversal", target: dockerArchive(t, [][]byte{traversal}, nil), check: func(t *testing.T, rep *Report) {
			if len(rep.Findings) != 1 || rep.Findings[0].Path != "etc/x" {
				t.Errorf("findings %+v", rep.Findings)
			}
			if len(rep.Warnings) == 0 || !strings.Contains(rep.Warnings[0], "leaves the root") {
				t.Errorf("warnings %q", rep.Warnings)
			}
		}},
		{name: "symlink loop", target: dockerArchive(t, [][]byte{loop}, nil), check: func(t *testing.T, rep *Report) {
			if len(rep.Findings) != 1 {
				t.Errorf("findings %+v", rep.Findings)
			}
		}},
		{name: "archive nesting", target: dockerArchive(t, [][]byte{nesting}, nil), check: func(t *testing.T, rep *Report) {
			got := map[string]bool{}
			for _, f := range rep.Findings {
				got[f.Path] = true
			}
			if len(got) != 2 || !got["app/outer.war!/lib/inner.jar!/app.properties"] || !got["app/bundle.zip!/bundle.tgz!/etc/.env"] {
				t.Errorf("findings %v", got)
			}
			if len(rep.Skipped) != 1 || rep.Skipped[0].Path != "app/deep.zip!/a.zip!/b.zip" || rep.Skipped[0].Reason != SkipTooDeep {
				t.Errorf("skipped %+v", rep.Skipped)
			}
		}},
		{name: "decompression bombs", target: dockerArchive(t, [][]byte{bombs}, nil), cfg: Config{MaxFileSize: 1 << 20},
			check: func(t *testing.T, rep *Report) {
				if len(rep.Findings) != 1 {
					t.Errorf("findings %+v", rep.Findings)
				}
				reasons := map[string]string{}
				for _, s := range rep.Skipped {
					reasons[s.Path] = s.Reason
				}
				if reasons["var/log/huge.log.gz"] != SkipBomb || reasons["app/bomb.jar!/zeros.txt"] != SkipBomb {
					t.Errorf("skipped %+v", rep.Skipped)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			before := tempEntries(t)
			img, closeFn, err := OpenImage(ctx, tc.target, OpenOptions{})
			var rep *Report
			if err == nil {
				rep, err = newScanner(t, tc.cfg).ScanImage(ctx, img, tc.target)
				_ = closeFn()
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("error %v, want %v", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), token()) {
					t.Errorf("error reveals the secret: %v", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, rep)
			}
			if after := tempEntries(t); after > before {
				t.Logf("temp dir entries %d -> %d (other tests may run)", before, after)
			}
		})
	}
}

func tempEntries(t *testing.T) int {
	es, _ := os.ReadDir(os.TempDir())
	return len(es)
}

// FuzzLayerReader feeds arbitrary bytes to the layer reader: it must return
// an error or a report, never panic or hang.
func FuzzLayerReader(f *testing.F) {
	secret := []byte("password = " + token() + "\n")
	f.Add(layerTar(f, entry{name: "a/.env", data: secret}))
	f.Add(layerTar(f, entry{name: "x.log.1.gz", data: gzipped(secret)}, entry{name: "d/.wh.gone"}, entry{name: "d/.wh..wh..opq"}))
	var zb bytes.Buffer
	zw := zip.NewWriter(&zb)
	w, _ := zw.Create("in/app.properties")
	_, _ = w.Write(secret)
	_ = zw.Close()
	f.Add(layerTar(f, entry{name: "app.jar", data: zb.Bytes()}, entry{name: "t.tar", data: layerTar(f, entry{name: "in", data: secret})}))
	f.Add(gzipped(layerTar(f, entry{name: "a", data: secret})))
	f.Add([]byte{})
	s, err := New(Config{MaxFileSize: 1 << 20, MaxArchiveBytes: 4 << 20, Workers: 2})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := s.newRun(context.Background())
		_, _ = r.readLayer(&LayerRef{Index: 0}, bytes.NewReader(data), "")
		rep := r.finish("fuzz", "image")
		for _, fd := range rep.Findings {
			if fd.Excerpt == "" && fd.Fingerprint == "" {
				t.Errorf("empty finding %+v", fd)
			}
		}
	})
}

// FuzzDetect runs the rules over arbitrary content, as text and as a
// binary: no panic, matches inside the data, and no excerpt showing more
// than the allowed prefix of its secret.
func FuzzDetect(f *testing.F) {
	rs, err := LoadRules()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		"DB_PASSWORD=" + token(), `{"password": "` + token() + `"}`, `\"token\": \"` + token() + `\"`,
		"<password>" + token() + "</password>", "define('DB_PASSWORD', '" + token() + "');",
		"curl -u a:" + token() + " https://x", "Authorization: Basic " + token(), "PrivateKey = " + token(),
		"-----BEGIN RSA PRIVATE KEY-----\n" + token() + "\n-----END RSA PRIVATE KEY-----", "\xfe\xed\xfe\xed\x00\x00\x00\x02",
	} {
		f.Add([]byte(s), false)
		f.Add([]byte("\x00"+s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, bin bool) {
		d := rs.newDetector()
		for _, p := range []string{"app/.env", "src/main.go", "root/.pgpass"} {
			ms := d.find(p, data, bin)
			for _, m := range ms {
				if m.start < 0 || m.end > len(data) || m.start > m.end || m.mstart > m.start || m.mend < m.end {
					t.Fatalf("%s: match %d:%d (%d:%d) outside %d bytes", m.rule.ID, m.start, m.end, m.mstart, m.mend, len(data))
				}
				if m.note != "" {
					continue
				}
				sec := data[m.start:m.end]
				if ex := excerpt(data, ms, m); len(sec) >= 16 && strings.Contains(ex, printable(sec[len(sec)/2:])) {
					t.Fatalf("%s: excerpt %q shows the secret", m.rule.ID, ex)
				}
			}
		}
	})
}

// FuzzContainers feeds arbitrary bytes to the readers of what a file can
// contain (git packs and loose objects, keystores, archives, gzip).
func FuzzContainers(f *testing.F) {
	secret := []byte("password = " + token() + "\n")
	f.Add(gitPackOf(secret))
	f.Add(gitPackOf(secret)[:40])
	f.Add(zlibOf(append([]byte("blob 30\x00"), secret...)))
	f.Add([]byte("\xfe\xed\xfe\xed\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x01\x00\x01a"))
	f.Add(gzipped(secret))
	s, err := New(Config{MaxFileSize: 1 << 20, MaxArchiveBytes: 4 << 20, Workers: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := s.newRun(context.Background())
		d := s.cfg.Rules.newDetector()
		for _, p := range []string{"app/.git/objects/pack/pack-1.pack", "app/.git/objects/ab/" + strings.Repeat("c", 38), "keystore.jks"} {
			budget := s.cfg.MaxArchiveBytes
			r.content(d, nil, "file", p, data, 0, &budget)
		}
		r.finish("fuzz", "dir")
	})
}

// TestGitObjects finds a secret committed to git, in a pack and as a loose
// object, and lists broken packs and bombs instead of failing.
func TestGitObjects(t *testing.T) {
	secret := "DB_PASSWORD=" + token() + "\n"
	pack := gitPackOf([]byte("# readme\n"), []byte(secret))
	bomb := gitPackOf(bytes.Repeat([]byte("a"), 3<<20))
	loose := zlibOf([]byte(fmt.Sprintf("blob %d\x00%s", len(secret), secret)))
	p := dockerArchive(t, [][]byte{layerTar(t,
		entry{name: "app/.git/objects/pack/pack-1.pack", data: pack},
		entry{name: "app/.git/objects/pack/pack-2.pack", data: pack[:len(pack)-30]},
		entry{name: "app/.git/objects/pack/pack-3.pack", data: bomb},
		entry{name: "app/.git/objects/4b/" + strings.Repeat("5", 38), data: loose},
	)}, nil)
	img, err := tarball.ImageFromPath(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := newScanner(t, Config{MaxFileSize: 1 << 20, MaxArchiveBytes: 2 << 20}).ScanImage(context.Background(), img, p)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range rep.Findings {
		got[f.File] = true
		if f.File == "app/.git/objects/pack/pack-1.pack" && (len(f.Member) != 40 || f.Line != 1) {
			t.Errorf("pack finding %s member %q line %d", f.Path, f.Member, f.Line)
		}
	}
	if !got["app/.git/objects/pack/pack-1.pack"] || !got["app/.git/objects/4b/"+strings.Repeat("5", 38)] {
		t.Errorf("findings %v", got)
	}
	reasons := map[string]string{}
	for _, s := range rep.Skipped {
		top, _, _ := strings.Cut(s.Path, "!/")
		reasons[top] = s.Reason
	}
	if reasons["app/.git/objects/pack/pack-2.pack"] != SkipCorrupt || reasons["app/.git/objects/pack/pack-3.pack"] == "" {
		t.Errorf("skipped %v", reasons)
	}
}

// gitPackOf writes a version 2 pack of blobs.
func gitPackOf(blobs ...[]byte) []byte {
	var b bytes.Buffer
	b.WriteString("PACK\x00\x00\x00\x02")
	binary.Write(&b, binary.BigEndian, uint32(len(blobs)))
	for _, blob := range blobs {
		size := len(blob)
		c := byte(3<<4) | byte(size&0x0f)
		size >>= 4
		for size > 0 {
			b.WriteByte(c | 0x80)
			c = byte(size & 0x7f)
			size >>= 7
		}
		b.WriteByte(c)
		b.Write(zlibOf(blob))
	}
	b.Write(make([]byte, 20))
	return b.Bytes()
}

func zlibOf(data []byte) []byte {
	var b bytes.Buffer
	zw := zlib.NewWriter(&b)
	zw.Write(data)
	zw.Close()
	return b.Bytes()
}
