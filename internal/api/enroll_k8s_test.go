package api_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"coffer/internal/api"
	"coffer/internal/identity"
	"coffer/internal/kube"
)

// fakeAttestor answers by token: each known token attests what it maps to,
// an unknown one fails with err (default ErrUnauthenticated).
type fakeAttestor struct {
	mu       sync.Mutex
	tokens   map[string]kube.Attestation
	errs     map[string]error
	alive    map[string]bool // pod uid → still runs
	aliveErr error
}

func (f *fakeAttestor) Alive(_ context.Context, _, _, uid string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.alive[uid], f.aliveErr
}

func (f *fakeAttestor) setAlive(uid string, alive bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.alive[uid], f.aliveErr = alive, err
}

func (f *fakeAttestor) Attest(_ context.Context, tok string) (kube.Attestation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err, ok := f.errs[tok]; ok {
		return kube.Attestation{}, err
	}
	if a, ok := f.tokens[tok]; ok {
		return a, nil
	}
	return kube.Attestation{}, fmt.Errorf("%w: invalid bearer token", kube.ErrUnauthenticated)
}

func podOn(node, uid string) kube.Attestation {
	return kube.Attestation{Node: node, Namespace: "coffer-system", Pod: "coffer-agent-" + uid, PodUID: uid, ServiceAccount: "coffer-agent", CredentialID: "JTI=" + uid}
}

func attestEnv(t *testing.T, na api.NodeAttestation) (*env, *fakeAttestor) {
	f := &fakeAttestor{tokens: map[string]kube.Attestation{}, errs: map[string]error{}, alive: map[string]bool{}}
	na.Attestor = f
	return newEnv(t, func(c *api.Config) { c.Attest = &na }), f
}

var k8sSource atomic.Int32

// enrollK8s posts an enrollment with a k8s token (and a name if not ""),
// each from another network (failures are throttled per network).
func (e *env) enrollK8s(tok, name string, extra map[string]any) (int, *x509.Certificate, string) {
	e.t.Helper()
	n := k8sSource.Add(1)
	return e.enrollK8sFrom(fmt.Sprintf("10.%d.%d.1", n/256%256, n%256), tok, name, extra)
}

func (e *env) enrollK8sFrom(src, tok, name string, extra map[string]any) (int, *x509.Certificate, string) {
	e.t.Helper()
	key, _ := identity.NewAgentKey()
	csr, _ := identity.NewCSR(key, "k8s-node")
	req := map[string]any{"k8s_token": tok, "csr": csr}
	if name != "" {
		req["name"] = name
	}
	maps.Copy(req, extra)
	b, _ := json.Marshal(req)
	r := httptest.NewRequest("POST", "/v1/enroll", strings.NewReader(string(b)))
	r.RemoteAddr = src + ":40000"
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	code, body := w.Code, w.Body.String()
	e.mu.Lock()
	e.responses.Write(w.Body.Bytes())
	e.mu.Unlock()
	if code != http.StatusOK {
		var eb struct {
			Error string `json:"error"`
		}
		if json.Unmarshal([]byte(body), &eb) == nil && eb.Error != "" {
			body = eb.Error
		}
		return code, nil, body
	}
	var resp struct {
		Certificate []byte `json:"certificate"`
		Name        string `json:"name"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		e.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(resp.Certificate)
	if err != nil {
		e.t.Fatal(err)
	}
	if n, _ := identity.AgentName(c); n != resp.Name {
		e.t.Fatalf("response name %q, certificate %q", resp.Name, n)
	}
	return code, c, body
}

type enrollRecord struct {
	Actor   string            `json:"actor"`
	Object  string            `json:"object"`
	Result  string            `json:"result"`
	Details map[string]string `json:"details"`
}

func (e *env) enrollRecords() []enrollRecord {
	e.t.Helper()
	var evs []enrollRecord
	e.json(e.admin, "GET", "/v1/audit?action=agent.enroll", nil, &evs)
	return evs
}

// TestEnrollByAttestation: the node's agent is enrolled under the node's
// name with k8s.node set by the server plus the configured labels and
// scope; the token never reaches a log, a response or the audit trail.
func TestEnrollByAttestation(t *testing.T) {
	e, f := attestEnv(t, api.NodeAttestation{Labels: map[string]string{"cluster": "prod"}, Scope: "shop/"})
	const tok = "eyJ.token-of-node-a.sig"
	f.tokens[tok] = podOn("node-a", "uid-1")
	code, cert, body := e.enrollK8s(tok, "", nil)
	if code != http.StatusOK {
		t.Fatalf("enroll: %d %s", code, body)
	}
	want := map[string]string{"cluster": "prod", "k8s.node": "node-a"}
	if n, _ := identity.AgentName(cert); n != "node-a" {
		t.Fatalf("agent name %q", n)
	}
	if got, _ := identity.AgentLabels(cert); !maps.Equal(got, want) {
		t.Fatalf("certificate labels %v", got)
	}
	if a := e.agents(e.admin)["node-a"]; !maps.Equal(a.Labels, want) || a.Scope != "shop/" {
		t.Fatalf("agent ls: %+v", a)
	}
	evs := e.enrollRecords()
	if len(evs) != 1 || evs[0].Result != "ok" || evs[0].Actor != "k8s:coffer-system/coffer-agent" || evs[0].Object != "agent:node-a" ||
		evs[0].Details["node"] != "node-a" || evs[0].Details["pod_uid"] != "uid-1" || evs[0].Details["labels"] != "cluster=prod,k8s.node=node-a" ||
		evs[0].Details["credential_id"] != "JTI=uid-1" || evs[0].Details["method"] != "k8s" {
		t.Fatalf("audit: %+v", evs)
	}
	// The same name given explicitly is fine for another node's token.
	f.tokens["tok-b"] = podOn("node-b", "uid-2")
	if code, _, body := e.enrollK8s("tok-b", "node-b", nil); code != http.StatusOK {
		t.Fatalf("with --name node-b: %d %s", code, body)
	}
	e.mu.Lock()
	leaked := strings.Contains(e.responses.String(), tok)
	e.mu.Unlock()
	if leaked || strings.Contains(e.logs.String(), tok) {
		t.Fatal("the token is in a response or a log")
	}
	b, _ := json.Marshal(e.enrollRecords())
	if strings.Contains(string(b), tok) {
		t.Fatal("the token is in the audit trail")
	}
}

// TestEnrollByAttestationRefusals: every refusal is a clear status with what
// is wrong, enrolls nothing, and is audited.
func TestEnrollByAttestationRefusals(t *testing.T) {
	e, f := attestEnv(t, api.NodeAttestation{})
	f.errs["wrong-aud"] = fmt.Errorf("%w by the API server for audience \"coffer\": token audiences [\"vault\"] is invalid", kube.ErrUnauthenticated)
	f.errs["other-sa"] = fmt.Errorf("%w: ServiceAccount coffer-system/other is not allowed to enroll node agents", kube.ErrDenied)
	f.errs["pod-gone"] = fmt.Errorf("%w: pod coffer-system/x of the token does not exist (any more)", kube.ErrDenied)
	f.errs["mismatch"] = fmt.Errorf("%w: pod coffer-system/x runs on node \"node-b\", but its token names node \"node-a\"", kube.ErrDenied)
	f.errs["down"] = fmt.Errorf("%w: TokenReview: Post \"https://10.96.0.1:443/apis\": connection refused", kube.ErrUnavailable)
	f.errs["rbac"] = fmt.Errorf("%w: TokenReview: %w: forbidden", kube.ErrUnavailable, kube.ErrRBAC)
	f.tokens["bad-node"] = podOn("Node_A", "uid-9")
	f.tokens["node-a"] = podOn("node-a", "uid-1")
	for _, tt := range []struct {
		desc, tok, name string
		extra           map[string]any
		code            int
		inMsg           string
	}{
		{"wrong audience", "wrong-aud", "", nil, http.StatusUnauthorized, `audience "coffer"`},
		{"garbage", "garbage", "", nil, http.StatusUnauthorized, "invalid bearer token"},
		{"another ServiceAccount", "other-sa", "", nil, http.StatusForbidden, "coffer-system/other is not allowed"},
		{"pod gone", "pod-gone", "", nil, http.StatusForbidden, "does not exist"},
		{"node mismatch", "mismatch", "", nil, http.StatusForbidden, `runs on node "node-b"`},
		{"API server down", "down", "", nil, http.StatusServiceUnavailable, "retry later"},
		{"no RBAC", "rbac", "", nil, http.StatusServiceUnavailable, "lacks RBAC: create on tokenreviews"},
		{"invalid node name", "bad-node", "", nil, http.StatusForbidden, "no valid agent name"},
		{"another name", "node-a", "node-b", nil, http.StatusForbidden, `whose agent is named "node-a", not "node-b"`},
		{"both tokens", "node-a", "", map[string]any{"join_token": "x"}, http.StatusBadRequest, "not both"},
		{"bad name", "node-a", "Node_A", nil, http.StatusBadRequest, "name"},
		{"bad csr", "node-a", "", map[string]any{"csr": []byte("junk")}, http.StatusBadRequest, "csr"},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			code, _, body := e.enrollK8s(tt.tok, tt.name, tt.extra)
			if code != tt.code || !strings.Contains(body, tt.inMsg) {
				t.Fatalf("%d %s; want %d naming %s", code, body, tt.code, tt.inMsg)
			}
		})
	}
	if a := e.agents(e.admin); len(a) != 0 {
		t.Fatalf("refusals enrolled %v", a)
	}
	e.mu.Lock()
	leaked := strings.Contains(e.responses.String(), "10.96.0.1")
	e.mu.Unlock()
	if leaked {
		t.Fatal("a 503 told an unauthenticated caller the API server's address")
	}
	results := map[string]int{}
	for _, ev := range e.enrollRecords() {
		results[ev.Result]++
		if ev.Details["reason"] == "" {
			t.Errorf("refusal without a reason: %+v", ev)
		}
	}
	// 400s are not audited (as for join tokens); every other refusal is.
	if results["unauthenticated"] != 2 || results["denied"] != 5 || results["unavailable"] != 2 {
		t.Fatalf("audited refusals %v", results)
	}
}

// TestAttestationRefusalsAreThrottled: refused tokens count as failed
// authentications of their network, as bad join tokens do.
func TestAttestationRefusalsAreThrottled(t *testing.T) {
	e, f := attestEnv(t, api.NodeAttestation{})
	f.errs["other-sa"] = fmt.Errorf("%w: ServiceAccount coffer-system/other is not allowed", kube.ErrDenied)
	f.tokens["ok"] = podOn("node-a", "uid-1")
	for range 5 {
		e.enrollK8sFrom("192.0.2.1", "other-sa", "", nil)
	}
	if code, _, body := e.enrollK8sFrom("192.0.2.1", "ok", "", nil); code != http.StatusTooManyRequests {
		t.Fatalf("after 5 refusals: %d %s", code, body)
	}
	if code, _, body := e.enrollK8sFrom("198.51.100.1", "ok", "", nil); code != http.StatusOK {
		t.Fatalf("another network: %d %s", code, body)
	}
}

// TestAttestationOff: a server without attestation refuses a k8s_token,
// and join-token enrollment works beside attestation.
func TestAttestationOff(t *testing.T) {
	e := newEnv(t)
	if code, _, body := e.enrollK8s("tok", "", nil); code != http.StatusForbidden || !strings.Contains(body, "kubernetes.agent_service_accounts") {
		t.Fatalf("%d %s", code, body)
	}
	e2, _ := attestEnv(t, api.NodeAttestation{})
	e2.mustEnroll(e2.admin, "docker-1", map[string]any{})
}

// TestReenrollByAttestation: a reimaged node's new agent pod enrolls again:
// the previous certificates are revoked, the re-enrollment is audited; the
// token that enrolled the agent cannot do it again; an agent enrolled with a
// join token is never replaced; NoReenroll refuses.
func TestReenrollByAttestation(t *testing.T) {
	e, f := attestEnv(t, api.NodeAttestation{})
	f.tokens["first"] = podOn("node-a", "uid-1")
	f.tokens["second"] = podOn("node-a", "uid-2")
	_, first, body := e.enrollK8s("first", "", nil)
	if first == nil {
		t.Fatal(body)
	}
	if code, _, body := e.enrollK8s("first", "", nil); code != http.StatusUnauthorized || !strings.Contains(body, "already enrolled") {
		t.Fatalf("the same token again: %d %s", code, body)
	}
	enrolled := e.agents(e.admin)["node-a"].Enrolled
	// While the pod that enrolled node-a runs, another pod claiming node-a
	// replaces nothing; nor while that cannot be checked.
	f.setAlive("uid-1", true, nil)
	if code, _, body := e.enrollK8s("second", "", nil); code != http.StatusConflict || !strings.Contains(body, "still runs") {
		t.Fatalf("second pod beside a running one: %d %s", code, body)
	}
	f.setAlive("uid-1", false, fmt.Errorf("%w: get pod: connection refused", kube.ErrUnavailable))
	if code, _, body := e.enrollK8s("second", "", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("previous pod unknown: %d %s", code, body)
	}
	if e.agents(e.admin)["node-a"].Enrolled != enrolled {
		t.Fatal("node-a replaced")
	}
	f.setAlive("uid-1", false, nil)
	code, second, body := e.enrollK8s("second", "", nil)
	if code != http.StatusOK {
		t.Fatalf("re-enrollment: %d %s", code, body)
	}
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 || e.agents(e.admin)["node-a"].Enrolled == enrolled {
		t.Fatal("not re-enrolled")
	}
	var re *enrollRecord
	for _, ev := range e.enrollRecords() {
		if ev.Details["reenrolled"] == "true" {
			re = &ev
		}
	}
	if re == nil || re.Details["replaced_pod_uid"] != "uid-1" || re.Details["pod_uid"] != "uid-2" || re.Details["replaced_enrolled"] == "" {
		t.Fatalf("re-enrollment record: %+v", re)
	}

	// An admin-enrolled agent of the same name is never replaced.
	e.mustEnroll(e.admin, "node-c", map[string]any{})
	f.tokens["c"] = podOn("node-c", "uid-3")
	if code, _, body := e.enrollK8s("c", "", nil); code != http.StatusConflict || !strings.Contains(body, "join token") || !strings.Contains(body, "coffer agent rm node-c") {
		t.Fatalf("over a join-token agent: %d %s", code, body)
	}

	// The same pod (its agent lost its state) enrolls again with a fresh
	// token: nothing to check, its pod is the enrolling one.
	same := podOn("node-a", "uid-2")
	same.CredentialID = "JTI=fresh"
	f.tokens["same-pod"] = same
	f.setAlive("uid-2", true, nil)
	if code, _, body := e.enrollK8s("same-pod", "", nil); code != http.StatusOK {
		t.Fatalf("same pod, fresh token: %d %s", code, body)
	}

	off, f2 := attestEnv(t, api.NodeAttestation{NoReenroll: true})
	f2.tokens["first"], f2.tokens["second"] = podOn("node-a", "uid-1"), podOn("node-a", "uid-2")
	if code, _, body := off.enrollK8s("first", "", nil); code != http.StatusOK {
		t.Fatal(code, body)
	}
	if code, _, body := off.enrollK8s("second", "", nil); code != http.StatusConflict || !strings.Contains(body, "re-enrollment is off") {
		t.Fatalf("NoReenroll: %d %s", code, body)
	}
}
