package kube

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Node attestation: an agent on a Kubernetes node proves which node it runs
// on with the ServiceAccount token the kubelet projects into its pod (as
// SPIRE's k8s_psat node attestor does). The server asks the API server who
// the token is (a TokenReview bound to Coffer's audience), requires an
// allowed ServiceAccount and a token bound to a pod on a node, and checks
// that this pod exists, on that node, with that ServiceAccount.

// Sentinel errors of Attest. Each is wrapped with what is wrong.
var (
	// ErrUnauthenticated: the API server does not accept the token (garbage,
	// expired, another audience, its pod deleted).
	ErrUnauthenticated = errors.New("ServiceAccount token not accepted")
	// ErrDenied: the token is genuine but may not enroll a node agent
	// (another ServiceAccount, not bound to a pod on a node, the pod gone
	// or elsewhere, a lifetime above the limit).
	ErrDenied = errors.New("ServiceAccount token may not enroll a node agent")
	// ErrUnavailable: the API server could not be asked.
	ErrUnavailable = errors.New("kubernetes API server unavailable")
	// ErrRBAC marks (with ErrUnavailable) an API server that refuses
	// coffer-server itself what attestation needs.
	ErrRBAC = errors.New("coffer-server lacks RBAC: create on tokenreviews.authentication.k8s.io, get on pods")
	// ErrPodNotFound is returned by PodGetter.Pod for a pod that does not exist.
	ErrPodNotFound = errors.New("pod not found")
)

// The keys of a pod-bound ServiceAccount token's extra user info, as a
// TokenReview returns them.
const (
	ExtraPodName      = "authentication.kubernetes.io/pod-name"
	ExtraPodUID       = "authentication.kubernetes.io/pod-uid"
	ExtraNodeName     = "authentication.kubernetes.io/node-name"
	ExtraCredentialID = "authentication.kubernetes.io/credential-id"
)

// DefaultAudience is the audience agents' projected tokens must carry.
const DefaultAudience = "coffer"

// DefaultMaxTokenTTL is the longest lifetime (expiry minus issue time) a
// token may have: the kubelet's default for projected tokens.
const DefaultMaxTokenTTL = time.Hour

// maxTokenLen bounds a token before anything is asked of the API server.
const maxTokenLen = 16 << 10

// Review is what the API server said of a token (a TokenReview's status).
type Review struct {
	Authenticated bool
	Error         string // why not, when not authenticated
	User          string // e.g. system:serviceaccount:coffer-system:coffer-agent
	Audiences     []string
	Extra         map[string][]string
}

// Reviewer asks the API server who a token is, for the given audiences
// (TokenReview). An error means the API server could not answer.
type Reviewer interface {
	Review(ctx context.Context, token string, audiences []string) (Review, error)
}

// AgentPod is what attestation needs of a pod.
type AgentPod struct {
	UID            string
	Node           string // spec.nodeName
	ServiceAccount string // spec.serviceAccountName
	Terminating    bool   // metadata.deletionTimestamp is set
	Phase          string
}

// PodGetter reads one pod; ErrPodNotFound if there is none.
type PodGetter interface {
	Pod(ctx context.Context, namespace, name string) (AgentPod, error)
}

// Attestation is a node agent's proven identity.
type Attestation struct {
	Node           string // the Kubernetes node the agent's pod runs on
	Namespace      string // of the pod and its ServiceAccount
	Pod            string // the agent's pod
	PodUID         string
	ServiceAccount string // its name, in Namespace
	// CredentialID identifies the token itself (its JTI), "" if the API
	// server does not say: never the token.
	CredentialID string
	Expires      time.Time
}

// AttestConfig configures an Attestor.
type AttestConfig struct {
	// ServiceAccounts may enroll node agents, as namespace/name.
	ServiceAccounts []string
	// Audience the token must be bound to; default DefaultAudience.
	Audience string
	// MaxTokenTTL is the longest lifetime a token may have; default
	// DefaultMaxTokenTTL.
	MaxTokenTTL time.Duration
	Reviewer    Reviewer
	Pods        PodGetter
}

// Attestor checks node agents' tokens. It is safe for concurrent use.
type Attestor struct {
	cfg AttestConfig
}

// ParseServiceAccount checks a namespace/name ServiceAccount reference.
func ParseServiceAccount(s string) (namespace, name string, err error) {
	ns, n, ok := strings.Cut(s, "/")
	if !ok || !dnsLabel(ns) || !dnsSubdomain(n) {
		return "", "", fmt.Errorf("ServiceAccount %q: want NAMESPACE/NAME (lower-case DNS names)", s)
	}
	return ns, n, nil
}

// NewAttestor checks cfg and returns an Attestor.
func NewAttestor(cfg AttestConfig) (*Attestor, error) {
	if len(cfg.ServiceAccounts) == 0 {
		return nil, errors.New("attestation: no ServiceAccount may enroll node agents")
	}
	for _, sa := range cfg.ServiceAccounts {
		if _, _, err := ParseServiceAccount(sa); err != nil {
			return nil, fmt.Errorf("attestation: %w", err)
		}
	}
	if cfg.Reviewer == nil || cfg.Pods == nil {
		return nil, errors.New("attestation: no API server client")
	}
	if cfg.Audience == "" {
		cfg.Audience = DefaultAudience
	}
	if cfg.MaxTokenTTL <= 0 {
		cfg.MaxTokenTTL = DefaultMaxTokenTTL
	}
	cfg.ServiceAccounts = slices.Clone(cfg.ServiceAccounts)
	return &Attestor{cfg: cfg}, nil
}

// Audience is the audience tokens must be bound to.
func (a *Attestor) Audience() string { return a.cfg.Audience }

// Attest proves which node the agent presenting token runs on. Errors wrap
// ErrUnauthenticated, ErrDenied or ErrUnavailable with what is wrong; none
// of them quotes the token.
func (a *Attestor) Attest(ctx context.Context, token string) (Attestation, error) {
	claims, err := parseClaims(token)
	if err != nil {
		return Attestation{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	rv, err := a.cfg.Reviewer.Review(ctx, token, []string{a.cfg.Audience})
	if err != nil {
		return Attestation{}, fmt.Errorf("%w: TokenReview: %w", ErrUnavailable, err)
	}
	if !rv.Authenticated {
		why := clip(rv.Error)
		if why == "" {
			why = "not authenticated"
		}
		return Attestation{}, fmt.Errorf("%w by the API server for audience %q: %s", ErrUnauthenticated, a.cfg.Audience, why)
	}
	// An audience-unaware authenticator answers for the API server's own
	// audience: the token must be bound to ours.
	if !slices.Contains(rv.Audiences, a.cfg.Audience) {
		return Attestation{}, fmt.Errorf("%w: the token is not bound to audience %q (project it with audience: %s)", ErrUnauthenticated, a.cfg.Audience, a.cfg.Audience)
	}
	ns, sa, ok := serviceAccountOf(rv.User)
	if !ok {
		return Attestation{}, fmt.Errorf("%w: %q is not a ServiceAccount", ErrDenied, clip(rv.User))
	}
	if !slices.Contains(a.cfg.ServiceAccounts, ns+"/"+sa) {
		return Attestation{}, fmt.Errorf("%w: ServiceAccount %s/%s is not allowed to enroll node agents (allowed: %s)",
			ErrDenied, ns, sa, strings.Join(a.cfg.ServiceAccounts, ", "))
	}
	pod, podUID, node := one(rv.Extra, ExtraPodName), one(rv.Extra, ExtraPodUID), one(rv.Extra, ExtraNodeName)
	if pod == "" || podUID == "" {
		return Attestation{}, fmt.Errorf("%w: the token of %s/%s is not bound to a pod: use the token the kubelet projects into the agent's pod (a serviceAccountToken volume)", ErrDenied, ns, sa)
	}
	if node == "" {
		return Attestation{}, fmt.Errorf("%w: the token of pod %s/%s names no node (the pod was not scheduled when it was issued)", ErrDenied, ns, pod)
	}
	if !dnsSubdomain(node) {
		return Attestation{}, fmt.Errorf("%w: node name %q is not a DNS subdomain", ErrDenied, clip(node))
	}
	if claims.Exp == 0 || claims.Iat == 0 {
		return Attestation{}, fmt.Errorf("%w: the token has no expiry: use a projected token", ErrDenied)
	}
	if ttl := time.Duration(claims.Exp-claims.Iat) * time.Second; ttl > a.cfg.MaxTokenTTL {
		return Attestation{}, fmt.Errorf("%w: the token is valid for %s, more than the %s allowed: project it with expirationSeconds of at most %d",
			ErrDenied, ttl, a.cfg.MaxTokenTTL, int(a.cfg.MaxTokenTTL.Seconds()))
	}
	p, err := a.cfg.Pods.Pod(ctx, ns, pod)
	switch {
	case errors.Is(err, ErrPodNotFound):
		return Attestation{}, fmt.Errorf("%w: pod %s/%s of the token does not exist (any more)", ErrDenied, ns, pod)
	case err != nil:
		return Attestation{}, fmt.Errorf("%w: get pod %s/%s: %w", ErrUnavailable, ns, pod, err)
	case p.UID != podUID:
		return Attestation{}, fmt.Errorf("%w: pod %s/%s is not the token's pod (uid %s, the token's %s): it was re-created", ErrDenied, ns, pod, p.UID, clip(podUID))
	case p.Node != node:
		return Attestation{}, fmt.Errorf("%w: pod %s/%s runs on node %q, but its token names node %q", ErrDenied, ns, pod, p.Node, node)
	case p.ServiceAccount != sa:
		return Attestation{}, fmt.Errorf("%w: pod %s/%s runs as ServiceAccount %q, not %q", ErrDenied, ns, pod, p.ServiceAccount, sa)
	case p.Terminating || p.Phase == "Succeeded" || p.Phase == "Failed":
		return Attestation{}, fmt.Errorf("%w: pod %s/%s is terminating or has ended", ErrDenied, ns, pod)
	}
	return Attestation{
		Node: node, Namespace: ns, Pod: pod, PodUID: podUID, ServiceAccount: sa,
		CredentialID: clip(one(rv.Extra, ExtraCredentialID)),
		Expires:      time.Unix(claims.Exp, 0).UTC(),
	}, nil
}

// Alive reports whether pod namespace/name with uid still exists and has
// not ended: whether an agent attested by that pod may still be running.
// An error means the API server could not answer (ErrUnavailable).
func (a *Attestor) Alive(ctx context.Context, namespace, name, uid string) (bool, error) {
	p, err := a.cfg.Pods.Pod(ctx, namespace, name)
	switch {
	case errors.Is(err, ErrPodNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("%w: get pod %s/%s: %w", ErrUnavailable, namespace, name, err)
	}
	return p.UID == uid && !p.Terminating && p.Phase != "Succeeded" && p.Phase != "Failed", nil
}

// claims are the registered claims Attest reads from a token after the API
// server has authenticated it (the signature is the API server's to check).
type claims struct {
	Exp int64 `json:"exp"`
	Iat int64 `json:"iat"`
}

// parseClaims refuses what cannot be a ServiceAccount JWT before the API
// server is asked, and reads its times.
func parseClaims(token string) (claims, error) {
	if token == "" {
		return claims{}, errors.New("empty token")
	}
	if len(token) > maxTokenLen {
		return claims{}, fmt.Errorf("token longer than %d bytes", maxTokenLen)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return claims{}, errors.New("not a JWT (want three base64url parts)")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return claims{}, errors.New("not a JWT (payload is not base64url)")
	}
	var c claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return claims{}, errors.New("not a JWT (payload is not a JSON object of claims)")
	}
	return c, nil
}

// serviceAccountOf parses system:serviceaccount:NS:NAME.
func serviceAccountOf(user string) (ns, name string, ok bool) {
	rest, ok := strings.CutPrefix(user, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	ns, name, ok = strings.Cut(rest, ":")
	return ns, name, ok && ns != "" && name != ""
}

// one is the single value of an extra key ("" if absent or several).
func one(extra map[string][]string, key string) string {
	if v := extra[key]; len(v) == 1 {
		return v[0]
	}
	return ""
}

// clip keeps what the API server says short and printable in messages.
func clip(s string) string {
	const max = 200
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > max {
		s = strings.ToValidUTF8(s[:max], "") + "…"
	}
	return s
}

func dnsLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

func dnsSubdomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !dnsLabel(l) {
			return false
		}
	}
	return true
}
