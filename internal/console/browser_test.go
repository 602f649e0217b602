package console_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"coffer/internal/agent"
	"coffer/internal/container"
	"coffer/internal/container/fake"
	"coffer/internal/deliver/memory"
	"coffer/internal/secret"
	"coffer/internal/server"
	"coffer/test/testkit"
)

// chromium finds Debian's chromium (or another Chrome); without one the
// test is skipped, or fails under COFFER_REQUIRE_TOOLS=1 (CI).
func chromium(t *testing.T) string {
	t.Helper()
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	msg := "no Chromium: apt-get install --no-install-recommends chromium fonts-liberation (the browser test drives it headless)"
	if os.Getenv("COFFER_REQUIRE_TOOLS") == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// gate holds a container's next deliveries until it is opened, so that
// the test sees a rollout in progress and then complete.
type gate struct {
	mu   sync.Mutex
	hold chan struct{}
}

func (g *gate) close() {
	g.mu.Lock()
	g.hold = make(chan struct{})
	g.mu.Unlock()
}

func (g *gate) open() {
	g.mu.Lock()
	if g.hold != nil {
		close(g.hold)
		g.hold = nil
	}
	g.mu.Unlock()
}

func (g *gate) wait(ctx context.Context) {
	g.mu.Lock()
	h := g.hold
	g.mu.Unlock()
	if h != nil {
		select {
		case <-h:
		case <-ctx.Done():
		}
	}
}

// The whole console in a real headless Chromium against a real
// coffer-server (in-process, TLS on 127.0.0.1) and a real coffer-agent
// (simulated runtime and deliverer): log in, put a secret, bind it with a
// live preview, watch the container pick it up, rotate it from a file and
// watch the rollout complete without reloading, and check that neither
// the pages' HTML nor the DOM ever holds a value.
func TestBrowser(t *testing.T) {
	chrome := chromium(t)
	if testing.Short() && os.Getenv("COFFER_REQUIRE_TOOLS") != "1" {
		t.Skip("the browser test runs Chromium")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// coffer-server, as coffer-server runs it.
	logs := &testkit.Buffer{}
	cfg := server.Defaults()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Listen = "127.0.0.1:0"
	srv, err := server.New(ctx, cfg, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Run(sctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-served; err != nil {
			t.Errorf("server: %v", err)
		}
	})
	addr := srv.Addr()
	base := "https://" + addr
	adminTok, err := os.ReadFile(filepath.Join(cfg.DataDir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(string(adminTok))
	caPEM, err := os.ReadFile(filepath.Join(cfg.DataDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	apiCall := func(method, path, body string, out any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+admin)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		if out != nil {
			json.Unmarshal(b, out)
		}
	}

	// A coffer-agent with a simulated runtime: one running container.
	var join struct{ Token string }
	apiCall(http.MethodPost, "/v1/tokens", `{"role":"agent","ttl":"1h","agent_labels":{"zone":"eu-1"}}`, &join)
	stateDir := filepath.Join(t.TempDir(), "agent")
	cert, err := agent.LoadOrEnroll(ctx, addr, caPEM, stateDir, "host-1", join.Token)
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{}
	rt := fake.New()
	d := memory.New(memory.Config{Fail: func(container.Info) error { g.wait(ctx); return nil }})
	actx, stopAgent := context.WithCancel(context.Background())
	agentDone := make(chan struct{})
	a := agent.New(agent.Config{Server: addr, CAPEM: caPEM, Cert: cert, StateDir: stateDir, Runtime: rt, Deliverer: d})
	go func() { a.Run(actx); close(agentDone) }()
	t.Cleanup(func() { g.open(); stopAgent(); <-agentDone })
	rt.Start(container.Info{ID: "c0ffee01", Name: "web-1", Labels: map[string]string{"app": "web"}, Image: "registry.example.com/web:1.2", PID: 1})
	rt.Start(container.Info{ID: "c0ffee02", Name: "worker-1", Labels: map[string]string{"app": "worker"}, PID: 2})
	waitFor(t, ctx, "the agent to report its containers", func() bool {
		var agents []struct {
			Connected  bool `json:"connected"`
			Containers int  `json:"containers"`
		}
		apiCall(http.MethodGet, "/v1/agents", "", &agents)
		return len(agents) == 1 && agents[0].Connected && agents[0].Containers == 2
	})

	// Chromium, headless, trusting the test server's certificate.
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome), chromedp.NoSandbox,
		chromedp.IgnoreCertErrors, chromedp.WindowSize(1280, 900), chromedp.UserDataDir(t.TempDir()),
		chromedp.Env("TMPDIR="+t.TempDir())) // its singleton socket dir goes with the test
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(alloc)
	defer cancelBrowser()
	if err := chromedp.Do(bctx); err != nil { // starts the browser, without a deadline
		t.Fatal(err)
	}
	// Every page records what the CSP blocked and every script error, for
	// the end of the test (sessionStorage outlives navigations).
	if _, err := chromedp.Run(bctx, chromedp.Action[cdppage.AddScriptToEvaluateOnNewDocumentResult](
		func(ctx context.Context, tg *chromedp.Target) (cdppage.AddScriptToEvaluateOnNewDocumentResult, error) {
			return cdp.Call(ctx, tg, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: trapProblems})
		})); err != nil {
		t.Fatal(err)
	}
	br := &chrome2{t: t, ctx: bctx, base: base, shots: os.Getenv("COFFER_UPDATE_SCREENSHOTS") == "1"}
	values := []string{}
	br.values = &values

	// Log in with the token.
	br.do(chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible("#token"))
	br.shot("login")
	br.do(chromedp.SendKeys("#token", admin), chromedp.Click("#token-login button"), chromedp.WaitVisible("#secrets"))
	if who := br.text("#principal"); !strings.HasPrefix(who, "token:") {
		t.Errorf("logged in as %q", who)
	}

	// Put a secret by typing it.
	v1 := "v1-" + secretish()
	values = append(values, v1)
	br.do(chromedp.SendKeys("#put-name", "app/db-password"), chromedp.SendKeys("#put-value", v1), chromedp.Click("#put-form button[type=submit]"),
		chromedp.WaitVisible("#secret"))
	if f := br.text("#flash"); !strings.Contains(f, "Stored version 1 of app/db-password") {
		t.Errorf("flash %q", f)
	}
	br.clean("secret page after the put")
	// Back to the form (the browser may restore pages and form fields).
	br.do(chromedp.Evaluate[chromedp.Void](`history.back()`, chromedp.EvalAsValue))
	br.waitText("#put-form", "Store")
	br.clean("the put form, after going back to it")

	// Bind it, with the live preview naming the running container.
	br.do(chromedp.Navigate(base+"/ui/bindings/edit"), chromedp.WaitVisible("#binding-form"),
		chromedp.SendKeys("#binding-name", "web-db"), chromedp.SendKeys("#binding-secret", "app/db-password"),
		chromedp.SendKeys("#binding-selector", "app=web"))
	br.waitText("#preview", "web-1")
	if p := br.text("#preview"); !strings.Contains(p, "gain") || strings.Contains(p, "worker-1") {
		t.Errorf("preview: %q", p)
	}
	br.shot("binding")
	br.do(chromedp.Click("#binding-save"), chromedp.WaitVisible("#binding-list"))
	br.shot("bindings")

	// The container gets v1, and the secret's page says so.
	waitFiles(t, ctx, d, "c0ffee01", "db-password", v1)
	br.do(chromedp.Navigate(base + "/ui/secrets/app/db-password"))
	br.waitText("#rollout-summary", "1 of 1 containers hold v1")

	// Rotate from a file while the agent's next delivery is held: the page
	// shows the rollout pending, then, without a reload, complete.
	v2 := "v2-" + secretish()
	values = append(values, v2)
	file := filepath.Join(t.TempDir(), "new-password")
	if err := os.WriteFile(file, []byte(v2), 0o600); err != nil {
		t.Fatal(err)
	}
	g.close()
	br.do(chromedp.Click(`#rotate-form input[value="file"]`), chromedp.SetUploadFiles("#rotate-file", []string{file}),
		chromedp.Click("#rotate-form button[type=submit]"))
	br.waitText("#flash", "Stored version 2")
	br.waitText("#rollout-summary", "pending")
	br.shot("rollout-pending")
	br.do(chromedp.Evaluate[chromedp.Void](`window.cofferMarker = 1`, chromedp.EvalAsValue))
	g.open()
	br.waitText("#rollout-summary", "1 of 1 containers hold v2")
	if st := br.text(`#holders tr[data-container="web-1"] td.state`); st != "current" {
		t.Errorf("web-1 state %q", st)
	}
	if m, err := chromedp.Run(bctx, chromedp.Evaluate[int](`window.cofferMarker || 0`)); err != nil || m != 1 {
		t.Errorf("the page was reloaded (marker %d, %v): the rollout was not updated live", m, err)
	}
	waitFiles(t, ctx, d, "c0ffee01", "db-password", v2)
	br.clean("secret page after the rotation")
	br.shot("secret")

	// Hosts: the agent, its labels, and what web-1 holds.
	br.do(chromedp.Navigate(base+"/ui/hosts"), chromedp.WaitVisible(`article.host[data-agent="host-1"]`))
	h := br.text(`article.host[data-agent="host-1"]`)
	for _, want := range []string{"connected", "zone=eu-1", "web-1", "app/db-password v2", "1 more running container"} {
		if !strings.Contains(h, want) {
			t.Errorf("hosts page lacks %q:\n%s", want, h)
		}
	}
	br.shot("hosts")

	// Audit: filtered by container, the deliveries to web-1; the chain verifies.
	br.do(chromedp.Navigate(base+"/ui/audit?container=web-1"), chromedp.WaitVisible("#audit-records"))
	if r := br.text("#audit-records"); !strings.Contains(r, "delivery.apply") || !strings.Contains(r, "delivery.rotate") || strings.Contains(r, "secret.put") {
		t.Errorf("audit by container:\n%s", r)
	}
	br.do(chromedp.Navigate(base+"/ui/audit?secret=app/db-password&limit=12"), chromedp.WaitVisible("#audit-records"),
		chromedp.Click("#audit-verify button"), chromedp.WaitVisible("#verify-result"))
	if v := br.text("#verify-result"); !strings.Contains(v, "Chain verified") {
		t.Errorf("verify: %q", v)
	}
	br.shot("audit")

	br.do(chromedp.Navigate(base+"/ui/secrets"), chromedp.WaitVisible("#secret-list"))
	br.clean("secrets list")
	br.shot("secrets")
	br.do(chromedp.Navigate(base+"/ui/bindings"), chromedp.WaitVisible("#binding-list"),
		chromedp.SendKeys(`#evaluate-form input[name="labels"]`, "app=web, env=prod"))
	br.waitText("#evaluated", "app/db-password")
	br.do(chromedp.Navigate(base+"/ui/incident?secret=app/db-password"), chromedp.WaitVisible("#report"))
	if v := br.text("#report-verified"); !strings.Contains(v, "verified") {
		t.Errorf("custody report: %q", v)
	}
	br.clean("incident")
	br.shot("incident")

	// Nothing anywhere holds a value: every page's HTML as the server
	// sent it, the server's log, its audit trail.
	for _, p := range []string{"/ui/secrets", "/ui/secrets/app/db-password", "/ui/fragment/holders/app/db-password", "/ui/bindings",
		"/ui/bindings/edit?name=web-db", "/ui/hosts", "/ui/fragment/hosts", "/ui/audit", "/ui/audit/export"} {
		html, err := chromedp.Run(bctx, chromedp.Evaluate[string](fmt.Sprintf(`fetch(%q).then(r => r.text())`, p), chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, v := range values {
			if strings.Contains(html, v) {
				t.Errorf("%s: the HTML holds a value", p)
			}
		}
	}
	trail, _ := os.ReadFile(filepath.Join(cfg.DataDir, "audit.log"))
	for _, v := range values {
		if strings.Contains(logs.String(), v) || bytes.Contains(trail, []byte(v)) {
			t.Error("a value is in the server's log or audit trail")
		}
	}

	problems, err := chromedp.Run(bctx, chromedp.Evaluate[string](`sessionStorage.getItem('problems') || ''`))
	if err != nil || problems != "" {
		t.Errorf("CSP violations or script errors in the pages: %s %v", problems, err)
	}

	// Other roles and scopes see the same server through their own eyes.
	var viewer, scoped struct{ Token string }
	apiCall(http.MethodPost, "/v1/tokens", `{"role":"viewer","ttl":"1h"}`, &viewer)
	apiCall(http.MethodPost, "/v1/tokens", `{"role":"operator","scope":"other/*","ttl":"1h"}`, &scoped)
	vh := pageAs(t, client, base, viewer.Token, "/ui/hosts")
	if !strings.Contains(vh, "/ui/secrets/app/db-password") || !strings.Contains(vh, ">web-1<") || strings.Contains(vh, `action="/ui/secrets/put"`) {
		t.Errorf("viewer's hosts page:\n%s", vh)
	}
	for _, p := range []string{"/ui/hosts", "/ui/secrets", "/ui/bindings"} {
		if sh := pageAs(t, client, base, scoped.Token, p); strings.Contains(sh, "/ui/secrets/app/db-password") || strings.Contains(sh, ">web-1<") {
			t.Errorf("an operator scoped to other/ sees app/ on %s:\n%s", p, sh)
		}
	}

	// Logging out ends the session.
	br.do(chromedp.Navigate(base+"/ui/secrets"), chromedp.WaitVisible("#secrets"), chromedp.Click(".who button"), chromedp.WaitVisible("#token"))
	br.do(chromedp.Navigate(base+"/ui/secrets"), chromedp.WaitVisible("#token"))
	t.Logf("browser test: %s", time.Since(start).Round(time.Millisecond))
}

// pageAs logs in with token (no browser: a Go client with a cookie jar)
// and returns the page at path.
func pageAs(t *testing.T, c *http.Client, base, token, path string) string {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	cl := *c
	cl.Jar = jar
	get := func(p string) string {
		resp, err := cl.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	m := csrfField.FindStringSubmatch(get("/ui/login"))
	if m == nil {
		t.Fatal("no login form")
	}
	resp, err := cl.PostForm(base+"/ui/login", url.Values{"csrf": {m[1]}, "token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return get(path)
}

// trapProblems runs before each page's own script.
const trapProblems = `(() => {
  const note = (what) => { try { sessionStorage.setItem('problems', (sessionStorage.getItem('problems') || '') + what + '\n'); } catch (e) {} };
  document.addEventListener('securitypolicyviolation', (e) => note('CSP ' + e.violatedDirective + ' ' + e.blockedURI + ' on ' + location.pathname));
  window.addEventListener('error', (e) => note('error ' + e.message + ' on ' + location.pathname));
  window.addEventListener('unhandledrejection', (e) => note('rejection ' + e.reason + ' on ' + location.pathname));
})();`

// chrome2 drives one tab, failing the test on any error.
type chrome2 struct {
	t      *testing.T
	ctx    context.Context
	base   string
	shots  bool
	values *[]string
}

func (c *chrome2) do(steps ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		c.t.Fatalf("browser: %v\n%s", err, c.page())
	}
}

// page describes where the browser is, for failures.
func (c *chrome2) page() string {
	ctx, cancel := context.WithTimeout(c.ctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
	if err != nil {
		return "(page unreadable: " + err.Error() + ")"
	}
	return "at " + s
}

func (c *chrome2) text(sel string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(sel))
	if err != nil {
		c.t.Fatalf("text of %s: %v", sel, err)
	}
	return strings.TrimSpace(s)
}

// waitText waits until sel's text contains want, across navigations
// (a form's submission may still be loading the next page).
func (c *chrome2) waitText(sel, want string) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return !!e && e.textContent.includes(%q); })()`, sel, want)
	for {
		ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("waiting for %q in %s: %v\n%s", want, sel, err, c.page())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clean checks that the DOM, with every field's current value, holds no
// secret value.
func (c *chrome2) clean(where string) {
	c.t.Helper()
	dom, err := chromedp.Run(c.ctx, chromedp.Evaluate[string](`document.documentElement.outerHTML + "\n" +
		Array.from(document.querySelectorAll('input, textarea, select')).map(e => e.value + (e.files ? Array.from(e.files).map(f => f.name).join() : '')).join("\n")`))
	if err != nil {
		c.t.Fatalf("%s: reading the DOM: %v", where, err)
	}
	for _, v := range *c.values {
		if strings.Contains(dom, v) {
			c.t.Errorf("%s: the DOM holds a secret value", where)
		}
	}
}

// shot saves a screenshot as docs/console/NAME.png when
// COFFER_UPDATE_SCREENSHOTS=1.
func (c *chrome2) shot(name string) {
	c.t.Helper()
	if !c.shots {
		return
	}
	png, err := chromedp.Run(c.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		c.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join("..", "..", "docs", "console", name+".png"), png, 0o644); err != nil {
		c.t.Fatal(err)
	}
}

func secretish() string {
	return fmt.Sprintf("s3cr3t-%d", time.Now().UnixNano())
}

func waitFor(t *testing.T, ctx context.Context, what string, ok func() bool) {
	t.Helper()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func waitFiles(t *testing.T, ctx context.Context, d *memory.Deliverer, id, file, want string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := d.WaitFiles(wctx, id, func(fs map[string]secret.File) bool { return string(fs[file].Value) == want }); err != nil {
		t.Fatalf("container %s never got %s: %v", id, file, err)
	}
}
