package cli_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/test/testkit"
)

// rechain rewrites a trail as a forger who knows the format but not the
// server's audit key would: every record's actor replaced, prev and hash
// recomputed, MACs dropped. The result is a valid plain hash chain.
func rechain(t *testing.T, trail string) string {
	t.Helper()
	var out strings.Builder
	prev := ""
	for _, line := range strings.SplitAfter(strings.TrimSuffix(trail, "\n"), "\n") {
		i := strings.LastIndex(line, `,"hash":"`)
		var rec struct{ Prev string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil || i < 0 {
			t.Fatalf("record %q: %v", line, err)
		}
		body := strings.Replace(line[:i], `"prev":"`+rec.Prev+`"`, `"prev":"`+prev+`"`, 1)
		body = strings.Replace(body, `"actor":"`, `"actor":"x`, 1)
		sum := sha256.Sum256([]byte(prev + "\n" + body + "}"))
		prev = hex.EncodeToString(sum[:])
		out.WriteString(body + `,"hash":"` + prev + "\"}\n")
	}
	return out.String()
}

// TestAuditHeadAndAnchoring: an exported head verifies online and offline
// while the trail holds it; a tail cut or a trail rewritten while the
// server is stopped is refused at start, with a clear error and the data
// dir unchanged; --audit-reanchor accepts a loss and records it.
func TestAuditHeadAndAnchoring(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds and runs binaries")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	trail := filepath.Join(data, "audit.log")
	s := testkit.StartServer(t, data)
	s.MustCLI(t, "v", "secret", "put", "a")
	s.MustCLI(t, "", "secret", "ls")

	var head struct {
		Seq  uint64 `json:"seq"`
		Hash string `json:"hash"`
	}
	out := s.MustCLI(t, "", "audit", "head", "-o", "json")
	if err := json.Unmarshal([]byte(out), &head); err != nil || head.Seq < 2 || len(head.Hash) != 64 {
		t.Fatalf("audit head -o json: %v %s", err, out)
	}
	headFile := filepath.Join(dir, "head.json")
	os.WriteFile(headFile, []byte(out), 0o600)
	table := s.MustCLI(t, "", "audit", "head")
	tableFile := filepath.Join(dir, "head.txt")
	os.WriteFile(tableFile, []byte(table), 0o600)
	seqHash := strings.Join([]string{jsonNumber(head.Seq), head.Hash}, ":")
	s.MustCLI(t, "", "secret", "ls") // the trail goes on after the head

	for _, h := range []string{headFile, tableFile, seqHash} {
		if out := s.MustCLI(t, "", "audit", "verify", "--head", h); !strings.HasPrefix(out, "ok:") {
			t.Fatalf("verify --head %s: %s", h, out)
		}
		if out := s.MustCLI(t, "", "audit", "verify", "--file", trail, "--head", h); !strings.HasPrefix(out, "ok:") {
			t.Fatalf("verify --file --head %s: %s", h, out)
		}
	}
	if _, errOut, code := s.CLI(t, "", "audit", "verify", "--head", "12:nothex"); code != 2 || !strings.Contains(errOut, "--head") {
		t.Fatalf("bad --head: exit %d: %s", code, errOut)
	}
	// The head just before the end: the last two records are cut below.
	lastHead := filepath.Join(dir, "last.json")
	os.WriteFile(lastHead, []byte(s.MustCLI(t, "", "audit", "head", "-o", "json")), 0o600)
	s.Stop()

	raw, _ := os.ReadFile(trail)
	lines := strings.SplitAfter(strings.TrimSuffix(string(raw), "\n"), "\n")
	if !strings.Contains(lines[len(lines)-1], `"mac":"`) {
		t.Fatalf("records carry no MAC: %s", lines[len(lines)-1])
	}
	// A copy cut before the exported head fails offline against it.
	cutCopy := filepath.Join(dir, "cut.log")
	os.WriteFile(cutCopy, []byte(strings.Join(lines[:head.Seq-1], "")), 0o600)
	if _, errOut, code := s.CLI(t, "", "audit", "verify", "--file", cutCopy, "--head", headFile); code != 1 || !strings.Contains(errOut, "records removed from the end") {
		t.Fatalf("cut copy against the head: exit %d: %s", code, errOut)
	}

	// The live trail cut while the server is stopped: start is refused.
	os.WriteFile(trail, []byte(strings.Join(lines[:len(lines)-2], "")), 0o600)
	before := snapshot(t, data)
	out = runServer(t, data)
	for _, want := range []string{trail, "ends before its anchored head", "the file ends at seq", "but the store anchors seq", "nothing was changed"} {
		if !strings.Contains(out, want) {
			t.Errorf("cut trail: output does not say %q:\n%s", want, out)
		}
	}
	if after := snapshot(t, data); after != before {
		t.Fatalf("a refused start changed the data dir:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Rewritten in full with a valid plain hash chain: refused (no MACs).
	os.WriteFile(trail, []byte(rechain(t, string(raw))), 0o600)
	before = snapshot(t, data)
	if out := runServer(t, data); !strings.Contains(out, "tampered") || !strings.Contains(out, "no MAC") {
		t.Fatalf("rewritten trail: %s", out)
	}
	if after := snapshot(t, data); after != before {
		t.Fatal("a refused start changed the data dir")
	}

	// Restored: the server starts again.
	os.WriteFile(trail, raw, 0o600)
	s = testkit.StartServer(t, data)
	s.MustCLI(t, "", "audit", "verify")
	s.Stop()

	// Cut again, and accepted with --audit-reanchor: the loss is recorded.
	os.WriteFile(trail, []byte(strings.Join(lines[:len(lines)-2], "")), 0o600)
	s = testkit.StartServer(t, data, "--audit-reanchor")
	out = s.MustCLI(t, "", "audit", "ls", "--action", "audit.reanchor", "-o", "json")
	var evs []map[string]any
	if err := json.Unmarshal([]byte(out), &evs); err != nil || len(evs) != 1 {
		t.Fatalf("audit.reanchor records: %v %s", err, out)
	}
	s.MustCLI(t, "", "audit", "verify")
	// The trail is whole again, but a head exported before the loss shows it,
	// online; the older head is still there.
	if out, errOut, code := s.CLI(t, "", "audit", "verify", "--head", lastHead); code != 1 || !strings.Contains(errOut, "tampered") {
		t.Fatalf("online verify against a head from before the loss: exit %d: %s%s", code, out, errOut)
	}
	s.MustCLI(t, "", "audit", "verify", "--head", headFile)
	s.Stop()
	// And the next start, without the flag, is a normal one.
	s = testkit.StartServer(t, data)
	s.MustCLI(t, "", "audit", "verify")
}

func jsonNumber(n uint64) string { b, _ := json.Marshal(n); return string(b) }
