package keystore

import (
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
	"gopkg.in/yaml.v3"
)

type testConfig struct {
	Address   string `yaml:"address"`
	TokenFile string `yaml:"token_file"`
	AppRole   *struct {
		RoleIDFile string `yaml:"role_id_file"`
	} `yaml:"approle"`
	Mount  string        `yaml:"kv_mount"`
	Wait   time.Duration `yaml:"wait"`
	Tags   []string      `yaml:"tags"`
	opened Options
}

func (c *testConfig) Validate() error {
	if c.Address == "" {
		return errors.New("address is missing")
	}
	return nil
}

func (c *testConfig) Open(o Options) (Keystore, error) { c.opened = o; return &oneItem{}, nil }

var testBuiltins = []Builtin{
	{Type: "test", DefaultPollInterval: 30 * time.Second, NewConfig: func() UpstreamConfig { return &testConfig{Mount: "secret"} }},
	{Type: "other", DefaultPollInterval: time.Minute, NewConfig: func() UpstreamConfig { return &testConfig{} }},
}

func decode(t *testing.T, doc string) ([]Upstream, error) {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(doc), &n); err != nil {
		t.Fatal(err)
	}
	return DecodeConfig(&n, testBuiltins)
}

func TestDecodeConfig(t *testing.T) {
	ups, err := decode(t, `
zeta:
  type: other
  address: https://z
vault:
  type: test
  address: https://127.0.0.1:8200
  token_file: /etc/coffer/vault-token
  approle: {role_id_file: /r}
  poll_interval: 2s
  timeout: 3s
  max_value_size: 4096
  wait: 1m
  tags: [a, b]
  allow: [payments/*]
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != 2 || ups[0].Name != "vault" || ups[1].Name != "zeta" {
		t.Fatalf("upstreams %+v, want vault and zeta in order", ups)
	}
	v := ups[0]
	c := v.Config.(*testConfig)
	if len(v.Allow) != 1 || v.Allow[0] != "payments/*" {
		t.Errorf("allow = %v", v.Allow)
	}
	if v.Type != "test" || v.PollInterval != 2*time.Second || v.Timeout != 3*time.Second || v.MaxValueSize != 4096 ||
		c.Address != "https://127.0.0.1:8200" || c.TokenFile != "/etc/coffer/vault-token" || c.AppRole == nil ||
		c.AppRole.RoleIDFile != "/r" || c.Mount != "secret" || c.Wait != time.Minute || len(c.Tags) != 2 {
		t.Errorf("decoded %+v %+v", v, c)
	}
	z := ups[1]
	if z.PollInterval != time.Minute || z.Timeout != DefaultTimeout || z.MaxValueSize != DefaultMaxValueSize {
		t.Errorf("defaults not applied: %+v", z)
	}
	if _, err := z.Open(nil, nil); err != nil {
		t.Fatal(err)
	}
	if o := z.Config.(*testConfig).opened; o.Name != "zeta" || o.MaxValueSize != DefaultMaxValueSize || o.Logger == nil {
		t.Errorf("Open passed %+v", o)
	}
	for _, doc := range []string{"", "~", "{}"} {
		if ups, err := decode(t, doc); err != nil || len(ups) != 0 {
			t.Errorf("decode(%q) = %v, %v", doc, ups, err)
		}
	}
	if ups, err := DecodeConfig(nil, testBuiltins); err != nil || ups != nil {
		t.Errorf("nil node: %v %v", ups, err)
	}
}

func TestDecodeConfigErrors(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"[a]", "want a mapping from upstream name"},
		{"vault: 3", "keystores.vault: line 1: want a mapping with at least `type:` (one of other, test)"},
		{"vault: {address: x}", "keystores.vault: line 1: type is missing (one of other, test)"},
		{"vault:\n  type: vault\n", `keystores.vault: line 2: type "vault" is unknown (one of other, test)`},
		{"vault:\n  type: test\n  adress: x\n", `keystores.vault: type test: line 3: unknown key "adress" (known keys: address, approle, kv_mount, tags, token_file, wait)`},
		{"vault:\n  type: test\n  address: x\n  approle: {role_id: x}\n", `line 4: unknown key "approle.role_id" (known keys: role_id_file)`},
		{"vault:\n  type: test\n  address: x\n  address: y\n", `line 4: key "address" given twice`},
		{"vault:\n  type: test\n", "type test: address is missing"},
		{"Vault:\n  type: test\n", "upstream name \"Vault\""},
		{"vault:\n  type: test\n  address: x\n  poll_interval: 10ms\n", "poll_interval 10ms: must be 1s to 24h0m0s"},
		{"vault:\n  type: test\n  address: x\n  poll_interval: soon\n", "poll_interval"},
		{"vault:\n  type: test\n  address: x\n  max_value_size: -1\n", "max_value_size -1"},
		{"vault:\n  type: test\n  address: x\n  timeout: 1h\n", "timeout 1h0m0s"},
		{"vault:\n  type: test\n  address: x\n  wait: [1]\n", "key wait"},
		{"vault:\n  type: test\n  address: x\n  approle: 3\n", "approle: want a mapping"},
		{"base: &b {type: test, address: x}\nvault:\n  <<: *b\n", "merge keys"},
		{"vault:\n  type: test\n  address: x\n  allow: [\"a*b\"]\n", `allow pattern "a*b"`},
	} {
		var n yaml.Node
		err := yaml.Unmarshal([]byte(tc.doc), &n)
		if err == nil {
			_, err = DecodeConfig(&n, testBuiltins)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want it to mention %q", tc.doc, err, tc.want)
			continue
		}
		if !errors.Is(err, ErrConfig) {
			t.Errorf("%q: %v does not wrap ErrConfig", tc.doc, err)
		}
	}
}

// TestDecodeConfigInServerYAML decodes the section the way coffer-server
// will: a field of its config struct, through a strict yaml.Decoder.
func TestDecodeConfigInServerYAML(t *testing.T) {
	var cfg struct {
		Listen    string    `yaml:"listen"`
		Keystores yaml.Node `yaml:"keystores"`
	}
	dec := yaml.NewDecoder(strings.NewReader("listen: x\nkeystores:\n  v:\n    type: test\n    address: a\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	ups, err := DecodeConfig(&cfg.Keystores, testBuiltins)
	if err != nil || len(ups) != 1 || ups[0].Name != "v" {
		t.Fatalf("%v %v", ups, err)
	}
}

// FuzzDecodeConfig: any YAML either decodes into valid upstreams or fails
// with ErrConfig; never a panic.
func FuzzDecodeConfig(f *testing.F) {
	f.Add("vault:\n  type: test\n  address: x\n  approle: {role_id_file: r}\n  poll_interval: 2s\n")
	f.Add("a: {type: other, address: y, tags: [1, 2]}\nb: {type: test}\n")
	f.Add("x: &a {type: test, address: z}\ny: *a\n")
	f.Add("v:\n  type: test\n  <<: {address: q}\n")
	f.Add("- 1\n- 2\n")
	f.Fuzz(func(t *testing.T, doc string) {
		var n yaml.Node
		if yaml.Unmarshal([]byte(doc), &n) != nil {
			return
		}
		ups, err := DecodeConfig(&n, testBuiltins)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v does not wrap ErrConfig", err)
			}
			return
		}
		for _, u := range ups {
			if ValidateUpstreamName(u.Name) != nil || u.Config == nil || u.PollInterval < MinPollInterval ||
				u.MaxValueSize < 1 || u.Config.Validate() != nil {
				t.Fatalf("accepted %+v", u)
			}
		}
	})
}

// max_requests_per_second paces an upstream's requests; bad values are
// refused with the key's name.
func TestRequestsPerSecond(t *testing.T) {
	for doc, want := range map[string]string{
		"m: {type: test, address: https://x}":                                "",
		"m: {type: test, address: https://x, max_requests_per_second: 5}":    "",
		"m: {type: test, address: https://x, max_requests_per_second: 0.5}":  "max_requests_per_second 0.5",
		"m: {type: test, address: https://x, max_requests_per_second: -1}":   "max_requests_per_second -1",
		"m: {type: test, address: https://x, max_requests_per_second: 1e9}":  "max_requests_per_second 1e+09",
		"m: {type: test, address: https://x, max_requests_per_second: fast}": "max_requests_per_second",
	} {
		ups, err := decode(t, doc)
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v", doc, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: %v, want %q", doc, err, want)
		case want == "" && ups[0].RequestsPerSecond == 0:
			t.Errorf("%s: no default rate", doc)
		}
	}
	lim := rate.NewLimiter(20, 1)
	var n atomic.Int32
	rt := RateTransport(roundTripFunc(func(*http.Request) (*http.Response, error) {
		n.Add(1)
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	}), lim)
	start := time.Now()
	for range 11 {
		req, _ := http.NewRequest("GET", "http://127.0.0.1/", nil)
		rt.RoundTrip(req)
	}
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Errorf("11 requests at 20/s took %s", el)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
