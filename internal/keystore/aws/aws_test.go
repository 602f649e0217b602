package aws

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"coffer/internal/keystore"
	"coffer/internal/keystore/aws/awsfake"
	"coffer/internal/keystore/keystoretest"
)

const (
	testAK = "AKIDCOFFERTEST"
	testSK = "coffer-test-secret-access-key"
)

type harness struct {
	fake  *awsfake.Server
	proxy *keystoretest.Proxy
	mode  string
}

func newHarness(t *testing.T, mode string) *harness {
	f := awsfake.New(t, "eu-west-1", testAK, testSK)
	f.SetPageSize(25) // several pages for the suite's ManyItems
	return &harness{fake: f, proxy: keystoretest.NewProxy(t, strings.TrimPrefix(f.URL, "http://")), mode: mode}
}

// testConfig is a Config against the fake with static credentials and no
// shared files or retries.
func (h *harness) testConfig() Config {
	return Config{
		Region: "eu-west-1", Endpoint: "http://" + h.proxy.Addr(), ChangeDetection: h.mode, MaxAttempts: 1,
		LoadOptions: []func(*config.LoadOptions) error{
			config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(testAK, testSK, "")),
			config.WithSharedConfigFiles([]string{}), config.WithSharedCredentialsFiles([]string{}),
		},
	}
}

func (h *harness) open(t *testing.T, cfg Config, max int) *Keystore {
	t.Helper()
	ks, err := New(cfg, keystore.Options{Name: "aws", MaxValueSize: max, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ks.Close() })
	return ks
}

func (h *harness) Name() string         { return "aws" }
func (h *harness) Item(n string) string { return "suite/" + n }
func (h *harness) Open(t *testing.T, max int) keystore.Keystore {
	return h.open(t, h.testConfig(), max)
}
func (h *harness) Put(t *testing.T, item string, f map[string]string) {
	h.fake.PutString(item, string(keystoretest.JSON(f)))
}
func (h *harness) PutRaw(t *testing.T, item string, v []byte) { h.fake.PutBinary(item, v) }
func (h *harness) Delete(t *testing.T, item string)           { h.fake.Delete(item, true) }
func (h *harness) Disable(t *testing.T, item string)          { h.fake.Delete(item, false) } // scheduled for deletion
func (h *harness) BreakAccess(t *testing.T)                   { h.fake.SetCredentials(testAK, "rotated-elsewhere") }
func (h *harness) RestoreAccess(t *testing.T)                 { h.fake.SetCredentials(testAK, testSK) }
func (h *harness) Down(t *testing.T)                          { h.proxy.Down() }
func (h *harness) Up(t *testing.T)                            { h.proxy.Up(t) }
func (h *harness) BadItems() []string {
	return []string{"a b", "a#b", "a\x00", strings.Repeat("a", 513), "arn:aws:s3:::bucket", "arn:aws:secretsmanager:eu-west-1:1:secret:x"}
}

func TestConformanceList(t *testing.T)     { keystoretest.Run(t, newHarness(t, "list")) }
func TestConformanceDescribe(t *testing.T) { keystoretest.Run(t, newHarness(t, "describe")) }

func TestCheckCost(t *testing.T) {
	h := newHarness(t, "list")
	h.fake.SetPageSize(100)
	var items []string
	for i := range 250 {
		items = append(items, "cost/"+strings.Repeat("x", i%5)+string(rune('a'+i%26))+strings.Repeat("0", i/26))
	}
	for _, it := range items {
		h.fake.PutString(it, `{"v":"x"}`)
	}
	ks := h.open(t, h.testConfig(), 0)
	st, err := ks.Check(context.Background(), items)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if st[it].Err != nil {
			t.Fatalf("%s: %v", it, st[it].Err)
		}
	}
	if n, d := h.fake.Calls("ListSecrets"), h.fake.Calls("DescribeSecret"); n != 3 || d != 0 {
		t.Errorf("checking 250 secrets took %d ListSecrets and %d DescribeSecret calls, want 3 and 0", n, d)
	}
}

func TestCheckByARNAndFallbacks(t *testing.T) {
	h := newHarness(t, "list")
	arn := h.fake.PutString("by/arn", `{"v":"1"}`)
	ks := h.open(t, h.testConfig(), 0)
	it, err := ks.Read(context.Background(), arn)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ks.Check(context.Background(), []string{arn})
	if err != nil || st[arn].Version != it.Version {
		t.Fatalf("Check by ARN = %+v, %v; want version %s", st[arn], err, it.Version)
	}
	// Without ListSecrets permission every item is described.
	h.fake.DenyList(true)
	st, err = ks.Check(context.Background(), []string{arn, "by/none"})
	if err != nil || st[arn].Version != it.Version || !errors.Is(st["by/none"].Err, keystore.ErrNotFound) {
		t.Fatalf("Check without ListSecrets = %+v, %v", st, err)
	}
	if h.fake.Calls("DescribeSecret") != 2 {
		t.Errorf("DescribeSecret calls = %d, want 2", h.fake.Calls("DescribeSecret"))
	}
}

func TestWrongRegionOrKeyIsAccessLost(t *testing.T) {
	h := newHarness(t, "list")
	h.fake.PutString("x", "v")
	cfg := h.testConfig()
	cfg.LoadOptions[0] = config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("AKIDOTHER", testSK, ""))
	ks := h.open(t, cfg, 0)
	if _, err := ks.Read(context.Background(), "x"); !errors.Is(err, keystore.ErrAccessLost) || !strings.Contains(err.Error(), "UnrecognizedClientException") {
		t.Fatalf("Read with an unknown access key: %v", err)
	}
	if _, err := ks.Check(context.Background(), []string{"x"}); !errors.Is(err, keystore.ErrAccessLost) {
		t.Fatalf("Check with an unknown access key: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{}, "region"},
		{Config{Region: "EU"}, "region"},
		{Config{Region: "eu-west-1", Endpoint: "http://sm.example"}, "loopback"},
		{Config{Region: "eu-west-1", Endpoint: "sm.example"}, "want https://"},
		{Config{Region: "eu-west-1", ChangeDetection: "push"}, "change_detection"},
	} {
		if err := tc.c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.c, err, tc.want)
		}
	}
	for _, c := range []Config{{Region: "us-gov-west-1"}, {Region: "eu-west-1", Endpoint: "https://vpce.example"}} {
		if err := c.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v", c, err)
		}
	}
}

func TestSignatureIsVerified(t *testing.T) {
	h := newHarness(t, "list")
	h.fake.PutString("x", "v")
	cfg := h.testConfig()
	cfg.LoadOptions[0] = config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(testAK, "wrong-secret", ""))
	ks := h.open(t, cfg, 0)
	_, err := ks.Read(context.Background(), "x")
	if !errors.Is(err, keystore.ErrAccessLost) || !strings.Contains(err.Error(), "InvalidSignatureException") {
		t.Fatalf("Read signed with a wrong secret key: %v", err)
	}
}

// TestHugeResponseIsTooLarge: a response beyond the body limit is cut off
// while the SDK decodes it, and reported as too large, not as gone.
func TestHugeResponseIsTooLarge(t *testing.T) {
	h := newHarness(t, "list")
	h.fake.PutString("huge", strings.Repeat("h", 9<<20))
	ks := h.open(t, h.testConfig(), 1024)
	_, err := ks.Read(context.Background(), "huge")
	if !errors.Is(err, keystore.ErrTooLarge) || keystore.Gone(err) {
		t.Fatalf("Read of a 9 MiB value with a 1 KiB cap: %v", err)
	}
}

// TestFastServer: a server that answers before net/http has made its last
// read of the request body (a local endpoint) must not break the response.
// Without HTTPClient's own request buffer the SDK's early close of the body
// made net/http close the connection under the response: most runs of this
// test failed under -race with "use of closed network connection".
func TestFastServer(t *testing.T) {
	h := newHarness(t, "list")
	h.fake.SetPageSize(100)
	var items []string
	for i := range 250 {
		items = append(items, fmt.Sprintf("fast/%03d", i))
		h.fake.PutString(items[i], "v")
	}
	cfg := h.testConfig()
	cfg.Endpoint = h.fake.URL // no proxy in between
	ks := h.open(t, cfg, 0)
	for i := range 60 {
		if _, err := ks.Check(context.Background(), items); err != nil {
			t.Fatalf("check %d: %v", i, err)
		}
	}
}
