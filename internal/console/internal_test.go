package console

import (
	"bytes"
	"mime/multipart"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The form parser agrees with net/url on every body both accept, and
// never panics.
func FuzzParseURLEncoded(f *testing.F) {
	for _, s := range []string{"", "a=1&b=2", "csrf=x&value=%00%ff+", "a", "a=%zz", "a=1&a=2", "=x", "&&a=b&&", "k=%E2%82%AC"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		got, err := parseURLEncoded([]byte(body))
		want, werr := url.ParseQuery(body)
		if err != nil {
			return
		}
		if werr != nil {
			// net/url refuses ';' separators; ours reads them as text.
			if strings.Contains(body, ";") {
				return
			}
			t.Fatalf("%q: we accept what net/url refuses: %v", body, werr)
		}
		for k, vs := range want {
			if len(vs) != 1 || !bytes.Equal(got.f[k], []byte(vs[0])) {
				t.Fatalf("%q: field %q = %q, net/url %q", body, k, got.f[k], vs)
			}
		}
		if len(got.f) != len(want) {
			t.Fatalf("%q: %d fields, net/url %d", body, len(got.f), len(want))
		}
	})
}

func FuzzParseMultipart(f *testing.F) {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	mw.WriteField("csrf", "tok")
	fw, _ := mw.CreateFormFile("file", "x.bin")
	fw.Write([]byte("\x00\x01value\r\n--"))
	mw.Close()
	f.Add(b.Bytes(), mw.Boundary())
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--b--\r\n"), "b")
	f.Fuzz(func(t *testing.T, body []byte, boundary string) {
		got, err := parseMultipart(body, boundary)
		if err != nil {
			return
		}
		n := 0
		for _, v := range got.f {
			n += len(v)
		}
		if n > len(body) {
			t.Fatalf("fields hold %d bytes of a %d-byte body", n, len(body))
		}
	})
}

func FuzzParseLabels(f *testing.F) {
	for _, s := range []string{"", "app=web", "app=web, env=prod", "a", "=x", "a=1,a=2", " , ,a = b "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseLabels("labels", s)
		if err != nil {
			if !strings.Contains(err.Error(), "labels:") {
				t.Fatalf("error does not name the field: %v", err)
			}
			return
		}
		// What formatLabels writes reads back the same.
		again, err := parseLabels("labels", formatLabels(m))
		if err != nil || len(again) != len(m) {
			t.Fatalf("%q → %v → %q → %v %v", s, m, formatLabels(m), again, err)
		}
		for k, v := range m {
			if again[k] != v {
				t.Fatalf("%q: %q=%q came back as %q", s, k, v, again[k])
			}
		}
	})
}

func FuzzParseMode(f *testing.F) {
	for _, s := range []string{"", "0440", "440", "0o600", "9", "07777", "010000", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseMode(s)
		if err == nil && m > 0o7777 {
			t.Fatalf("%q → %o", s, m)
		}
	})
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]uint32{"": 0, "0440": 0o440, "440": 0o440, "0o600": 0o600, " 0400 ": 0o400} {
		if got, err := parseMode(in); err != nil || got != want {
			t.Errorf("%q: %o %v", in, got, err)
		}
	}
	for _, in := range []string{"9", "0x10", "010000", "-1", "rw"} {
		if _, err := parseMode(in); err == nil || !strings.Contains(err.Error(), "mode") {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	in := []byte("a\"b\\c\x00\n<é>")
	got := string(appendJSONString(nil, in))
	if got != `"a\"b\\c\u0000\u000a\u003cé\u003e"` {
		t.Errorf("%s", got)
	}
}

// Sessions past their expiry leave the table (and their tokens memory) at
// the next login, without waiting for the table to fill.
func TestExpiredSessionsAreSwept(t *testing.T) {
	tab := newSessions(100)
	now := time.Now()
	old := &sess{token: "t1", expires: now.Add(time.Minute), seen: now}
	tab.add(old, now)
	later := now.Add(2 * time.Minute)
	tab.add(&sess{token: "t2", expires: later.Add(time.Hour), seen: later}, later)
	tab.mu.Lock()
	defer tab.mu.Unlock()
	if _, ok := tab.m[old.key]; ok || len(tab.m) != 1 {
		t.Errorf("%d sessions; the expired one kept: %v", len(tab.m), ok)
	}
}
