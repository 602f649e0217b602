package kube

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

type fakeReviewer struct {
	r     Review
	err   error
	calls int
}

func (f *fakeReviewer) Review(context.Context, string, []string) (Review, error) {
	f.calls++
	return f.r, f.err
}

type fakePods map[string]AgentPod // namespace/name → pod; "!err" → an error

func (f fakePods) Pod(_ context.Context, ns, name string) (AgentPod, error) {
	if _, ok := f["!err"]; ok {
		return AgentPod{}, errors.New("connection refused")
	}
	p, ok := f[ns+"/"+name]
	if !ok {
		return AgentPod{}, fmt.Errorf("pod %s/%s: %w", ns, name, ErrPodNotFound)
	}
	return p, nil
}

// jwt makes an unsigned token with these claims (the fake reviewer is the
// one that "verifies" it).
func jwt(iat, exp int64) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(fmt.Appendf(nil, `{"iat":%d,"exp":%d}`, iat, exp)) + ".c2ln"
}

func goodReview() Review {
	return Review{
		Authenticated: true, User: "system:serviceaccount:coffer-system:coffer-agent", Audiences: []string{"coffer"},
		Extra: map[string][]string{
			ExtraPodName: {"coffer-agent-x1"}, ExtraPodUID: {"uid-1"}, ExtraNodeName: {"node-a"}, ExtraCredentialID: {"JTI=abc"},
		},
	}
}

func goodPods() fakePods {
	return fakePods{"coffer-system/coffer-agent-x1": {UID: "uid-1", Node: "node-a", ServiceAccount: "coffer-agent", Phase: "Running"}}
}

func TestAttestEdgeCases(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	good := jwt(now.Unix(), now.Add(10*time.Minute).Unix())
	for _, tt := range []struct {
		desc  string
		token string
		rv    func(*Review)
		rvErr error
		pods  func(fakePods)
		want  error
		inMsg string
	}{
		{desc: "ok", token: good},
		{desc: "review unavailable", token: good, rvErr: errors.New("dial tcp: connection refused"), want: ErrUnavailable, inMsg: "TokenReview"},
		{desc: "not authenticated", token: good, rv: func(r *Review) { r.Authenticated, r.Error = false, "token expired" }, want: ErrUnauthenticated, inMsg: "token expired"},
		{desc: "audience-unaware answer", token: good, rv: func(r *Review) { r.Audiences = nil }, want: ErrUnauthenticated, inMsg: `not bound to audience "coffer"`},
		{desc: "not a ServiceAccount", token: good, rv: func(r *Review) { r.User = "system:serviceaccount:coffer-system" }, want: ErrDenied, inMsg: "is not a ServiceAccount"},
		{desc: "a user", token: good, rv: func(r *Review) { r.User = "alice" }, want: ErrDenied, inMsg: "is not a ServiceAccount"},
		{desc: "another ServiceAccount", token: good, rv: func(r *Review) { r.User = "system:serviceaccount:default:coffer-agent" }, want: ErrDenied, inMsg: "default/coffer-agent is not allowed"},
		{desc: "no pod", token: good, rv: func(r *Review) { delete(r.Extra, ExtraPodName) }, want: ErrDenied, inMsg: "not bound to a pod"},
		{desc: "two pods", token: good, rv: func(r *Review) { r.Extra[ExtraPodName] = []string{"a", "b"} }, want: ErrDenied, inMsg: "not bound to a pod"},
		{desc: "no node", token: good, rv: func(r *Review) { delete(r.Extra, ExtraNodeName) }, want: ErrDenied, inMsg: "names no node"},
		{desc: "odd node name", token: good, rv: func(r *Review) { r.Extra[ExtraNodeName] = []string{"Node_A\n"} }, want: ErrDenied, inMsg: "not a DNS subdomain"},
		{desc: "no expiry", token: jwt(now.Unix(), 0), want: ErrDenied, inMsg: "no expiry"},
		{desc: "lives too long", token: jwt(now.Unix(), now.Add(48*time.Hour).Unix()), want: ErrDenied, inMsg: "expirationSeconds of at most 3600"},
		{desc: "pod gone", token: good, pods: func(p fakePods) { delete(p, "coffer-system/coffer-agent-x1") }, want: ErrDenied, inMsg: "does not exist"},
		{desc: "pod lookup fails", token: good, pods: func(p fakePods) { p["!err"] = AgentPod{} }, want: ErrUnavailable, inMsg: "get pod"},
		{desc: "pod re-created", token: good, pods: func(p fakePods) {
			p["coffer-system/coffer-agent-x1"] = AgentPod{UID: "uid-2", Node: "node-a", ServiceAccount: "coffer-agent"}
		}, want: ErrDenied, inMsg: "re-created"},
		{desc: "node mismatch", token: good, pods: func(p fakePods) {
			p["coffer-system/coffer-agent-x1"] = AgentPod{UID: "uid-1", Node: "node-b", ServiceAccount: "coffer-agent"}
		}, want: ErrDenied, inMsg: `runs on node "node-b"`},
		{desc: "pod runs as another ServiceAccount", token: good, pods: func(p fakePods) {
			p["coffer-system/coffer-agent-x1"] = AgentPod{UID: "uid-1", Node: "node-a", ServiceAccount: "default"}
		}, want: ErrDenied, inMsg: `ServiceAccount "default"`},
		{desc: "pod terminating", token: good, pods: func(p fakePods) {
			p["coffer-system/coffer-agent-x1"] = AgentPod{UID: "uid-1", Node: "node-a", ServiceAccount: "coffer-agent", Terminating: true}
		}, want: ErrDenied, inMsg: "terminating"},
		{desc: "pod ended", token: good, pods: func(p fakePods) {
			p["coffer-system/coffer-agent-x1"] = AgentPod{UID: "uid-1", Node: "node-a", ServiceAccount: "coffer-agent", Phase: "Failed"}
		}, want: ErrDenied, inMsg: "ended"},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			rv := goodReview()
			if tt.rv != nil {
				tt.rv(&rv)
			}
			pods := goodPods()
			if tt.pods != nil {
				tt.pods(pods)
			}
			a, err := NewAttestor(AttestConfig{ServiceAccounts: []string{"coffer-system/coffer-agent"},
				Reviewer: &fakeReviewer{r: rv, err: tt.rvErr}, Pods: pods})
			if err != nil {
				t.Fatal(err)
			}
			at, err := a.Attest(context.Background(), tt.token)
			if tt.want == nil {
				if err != nil || at.Node != "node-a" || at.Pod != "coffer-agent-x1" || at.CredentialID != "JTI=abc" || !at.Expires.Equal(now.Add(10*time.Minute)) {
					t.Fatalf("Attest = %+v, %v", at, err)
				}
				return
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.inMsg) {
				t.Fatalf("err = %v; want %v naming %q", err, tt.want, tt.inMsg)
			}
			if strings.Contains(err.Error(), tt.token) {
				t.Fatal("the error quotes the token")
			}
			if strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("control characters in %q", err)
			}
		})
	}
}

// Garbage never reaches the API server.
func TestAttestRefusesGarbageLocally(t *testing.T) {
	rv := &fakeReviewer{r: goodReview()}
	a, err := NewAttestor(AttestConfig{ServiceAccounts: []string{"coffer-system/coffer-agent"}, Reviewer: rv, Pods: goodPods()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"", "x", "a.b", "a.!!.c", "a." + base64.RawURLEncoding.EncodeToString([]byte("[1]")) + ".c", strings.Repeat("a", 20<<10) + ".b.c"} {
		if _, err := a.Attest(context.Background(), tok); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("Attest(%.20q) = %v", tok, err)
		}
	}
	if rv.calls != 0 {
		t.Fatalf("garbage was sent to the API server %d times", rv.calls)
	}
}

func TestNewAttestorChecksConfig(t *testing.T) {
	rv, pods := &fakeReviewer{}, goodPods()
	for _, sas := range [][]string{nil, {"coffer-agent"}, {"Coffer/agent"}, {"ns/"}, {"/name"}, {"a/b/c"}} {
		if _, err := NewAttestor(AttestConfig{ServiceAccounts: sas, Reviewer: rv, Pods: pods}); err == nil {
			t.Errorf("ServiceAccounts %q accepted", sas)
		}
	}
	a, err := NewAttestor(AttestConfig{ServiceAccounts: []string{"coffer-system/coffer-agent", "kube-system/coffer.agent"}, Reviewer: rv, Pods: pods})
	if err != nil || a.Audience() != DefaultAudience {
		t.Fatalf("NewAttestor = %v, %v", a, err)
	}
}

// FuzzParseClaims: no input makes the local check panic.
func FuzzParseClaims(f *testing.F) {
	f.Add(jwt(1, 2))
	f.Add("a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = parseClaims(s)
	})
}

func TestAlive(t *testing.T) {
	pods := goodPods()
	pods["coffer-system/ended"] = AgentPod{UID: "uid-3", Phase: "Succeeded"}
	a, err := NewAttestor(AttestConfig{ServiceAccounts: []string{"coffer-system/coffer-agent"}, Reviewer: &fakeReviewer{}, Pods: pods})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, uid string
		want      bool
	}{{"coffer-agent-x1", "uid-1", true}, {"coffer-agent-x1", "uid-0", false}, {"gone", "uid-1", false}, {"ended", "uid-3", false}} {
		if got, err := a.Alive(context.Background(), "coffer-system", tt.name, tt.uid); err != nil || got != tt.want {
			t.Errorf("Alive(%s, %s) = %v, %v", tt.name, tt.uid, got, err)
		}
	}
	pods["!err"] = AgentPod{}
	if _, err := a.Alive(context.Background(), "coffer-system", "coffer-agent-x1", "uid-1"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("lookup failure: %v", err)
	}
}
