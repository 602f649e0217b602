package scan

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClassifyPath(t *testing.T) {
	for _, tc := range []struct {
		path                           string
		test, docs, template, vendored bool
	}{
		{"app/config/prod.yaml", false, false, false, false},
		{"app/tests/fixtures/users.json", true, false, false, false},
		{"usr/lib/python3/site-packages/psycopg2/tests/dbapi20.py", true, false, false, true},
		{"app/node_modules/pg/test/integration/client.js", true, false, false, true},
		{"src/db/store_test.go", true, false, false, false},
		{"web/src/api.spec.ts", true, false, false, false},
		{"spec/models/user_spec.rb", true, false, false, false},
		{"app/src/test/java/com/corp/DbTest.java", true, false, false, false},
		{"app/README.md", false, true, false, false},
		{"usr/share/doc/redis/examples/redis.conf", false, true, false, false},
		{"usr/share/man/man5/pgpass.5.gz", false, true, false, false},
		{"app/docs/setup.html", false, true, false, false},
		{"app/CHANGELOG", false, true, false, false},
		{"app/.env.example", false, false, true, false},
		{"app/config/settings.sample.json", false, false, true, false},
		{"app/lib/x.jar!/META-INF/README.md", false, true, false, false},
		{"var/log/app/http.log.1.gz", false, false, false, false},
		{"app/latest/contest.py", false, false, false, false},
		{"app/vendor/github.com/lib/pq/conn.go", false, false, false, true},
		{"config:env", false, false, false, false},
	} {
		c := classifyPath(tc.path)
		if c.test != tc.test || c.docs != tc.docs || c.template != tc.template || c.vendored != tc.vendored {
			t.Errorf("%s: %+v", tc.path, c)
		}
	}
}

func TestHostsAndDefaults(t *testing.T) {
	for m, want := range map[string]int{
		"postgres://user:Xk3@localhost/db":      1,
		"redis://:Xk3@127.0.0.1:6379":           1,
		"https://u:p@api.example.com/v1":        1,
		"Server=db.test;Password=x":             1,
		"amqp://u:p@rabbitmq.corp.internal/":    0,
		"https://u:p@localhostile.corp/":        0,
		"mysql://u:p@notexample.company:3306/x": 0,
	} {
		if got := len(hostReasons([]byte(m))); got != want {
			t.Errorf("%s: %d host reasons, want %d", m, got, want)
		}
	}
	if !defaultCredential([]byte("postgres"), []byte("postgres")) || !defaultCredential([]byte("x"), []byte("Changeit")) ||
		!defaultCredential([]byte("deploy"), []byte("deploy")) || defaultCredential([]byte("app"), []byte("Zr8f3kQ9pLx2Vb7m")) {
		t.Error("defaultCredential")
	}
}

// TestConfidence scans a directory holding the three false alarms
// (a vendored package's own test, a README URL on localhost, a test
// fixture), a default credential, a value also printed in the package's
// docs, and real secrets beside them: the first go to Low and do not count
// at --fail-on; a private key in a test directory stays counted.
func TestConfidence(t *testing.T) {
	dir := t.TempDir()
	g := newRnd()
	pw := func() string { return "Zr" + g.s(an, 14) }
	key := g.pem("RSA PRIVATE KEY")
	documented := pw()
	write := func(rel, content string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("usr/lib/python3/site-packages/psycopg2/tests/testconfig.py", "dbpassword = '"+pw()+"'\n")
	write("app/README.md", "Run it against `postgres://user:"+pw()+"@localhost/app`.\n")
	write("app/tests/fixtures/users.json", `[{"name": "alice", "password": "`+pw()+`"}]`+"\n")
	write("app/config/local.env", "DATABASE_URL=postgres://postgres:postgres@db:5432/app\n")
	write("app/node_modules/cachelib/config.js", "module.exports = { password: '"+documented+"' };\n")
	write("app/node_modules/cachelib/README.md", "The default password is "+documented+".\n")
	write("app/tests/keys/signing.pem", key)
	write("app/.env", "DB_PASSWORD="+pw()+"\nDB_URL=postgres://app:"+pw()+"@localhost/app\n")
	write("app/config/prod.yaml", "stripe_secret: sk_live_"+g.s(an, 30)+"\n")

	s := newScanner(t, Config{})
	rep, err := s.ScanDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	conf := map[string]Confidence{}
	for _, f := range append(append([]Finding(nil), rep.Findings...), rep.Low...) {
		conf[f.Path+":"+f.RuleID] = f.Confidence
		if (f.Confidence == ConfidenceHigh) != (len(f.Context) == 0) {
			t.Errorf("%s: confidence %s with context %v", f.Path, f.Confidence, f.Context)
		}
	}
	for k, want := range map[string]Confidence{
		"usr/lib/python3/site-packages/psycopg2/tests/testconfig.py:generic-password": ConfidenceLow,
		"app/README.md:url-credentials":                                               ConfidenceLow,
		"app/tests/fixtures/users.json:generic-password":                              ConfidenceLow,
		"app/config/local.env:url-credentials":                                        ConfidenceLow,
		"app/node_modules/cachelib/config.js:generic-password":                        ConfidenceLow,
		"app/tests/keys/signing.pem:rsa-private-key":                                  ConfidenceMedium,
		"app/.env:generic-password":                                                   ConfidenceHigh,
		"app/.env:url-credentials":                                                    ConfidenceMedium,
		"app/config/prod.yaml:stripe-secret-key":                                      ConfidenceHigh,
	} {
		if got := conf[k]; got != want {
			t.Errorf("%s: confidence %v, want %v", k, got, want)
		}
	}
	if len(rep.Low) != 5 || len(rep.Findings) != 4 {
		t.Errorf("%d findings, %d low", len(rep.Findings), len(rep.Low))
	}
	if n := rep.CountAtLeast(SeverityLow, false); n != 4 {
		t.Errorf("CountAtLeast without low: %d", n)
	}
	if n := rep.CountAtLeast(SeverityLow, true); n != 9 {
		t.Errorf("CountAtLeast with low: %d", n)
	}
	for _, f := range rep.Findings {
		if f.Secret() != nil {
			t.Errorf("%s: value kept without KeepValues", f.Path)
		}
	}
}

// TestKeepValues: with KeepValues a finding carries its value (a PEM key as
// a whole block, for import), which never prints, and Zero wipes it.
func TestKeepValues(t *testing.T) {
	dir := t.TempDir()
	g := newRnd()
	pw := "Zr" + g.s(an, 14)
	key := g.pem("EC PRIVATE KEY")
	os.WriteFile(filepath.Join(dir, ".env"), []byte("API_TOKEN="+pw+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "tls.key"), []byte(key), 0o600)
	rep, err := newScanner(t, Config{KeepValues: true}).ScanDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	var kept [][]byte
	for _, f := range rep.Findings {
		got[f.RuleID] = string(f.Secret())
		kept = append(kept, f.Secret())
		if s := strings.Join([]string{f.Excerpt, f.Secret().String()}, " "); strings.Contains(s, pw) {
			t.Errorf("value printed: %s", s)
		}
	}
	if got["generic-password"] != pw || got["ec-private-key"] != strings.TrimSuffix(key, "\n") {
		t.Errorf("kept values %q", got)
	}
	rep.Zero()
	for _, k := range kept {
		for _, c := range k {
			if c != 0 {
				t.Fatal("Zero left a value")
			}
		}
	}
}
