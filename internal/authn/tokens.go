// Package authn authenticates people and agents: bearer tokens for people
// (256-bit random, stored only as SHA-256 hashes, compared in constant time,
// with TTLs, roles and scopes) and one-time join tokens for agents.
package authn

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"coffer/internal/authz"
	"coffer/internal/policy"
	"coffer/internal/store"
)

// ErrUnauthenticated is returned (wrapped) for a missing, malformed, wrong,
// expired, revoked or already used token. Its message never says which, so
// that a guesser learns nothing.
var ErrUnauthenticated = errors.New("invalid or expired token")

// tokenPrefix marks Coffer tokens so that scanners can find leaked ones.
const tokenPrefix = "coffer_"

// Token is a token's record. The token itself is never stored.
type Token struct {
	ID          string     `json:"id"`
	Role        authz.Role `json:"role"`
	Scope       string     `json:"scope,omitempty"`
	Description string     `json:"description,omitempty"`
	CreatedBy   string     `json:"created_by"`
	Created     time.Time  `json:"created"`
	Expires     time.Time  `json:"expires,omitzero"`
	OneTime     bool       `json:"one_time,omitempty"`
	// AgentLabels, on an agent join token, become the enrolled agent's
	// labels (host selectors match them); the agent cannot change them.
	AgentLabels map[string]string `json:"agent_labels,omitempty"`
	Used        bool              `json:"used,omitempty"`
	// User, Groups and Grants are set on a login session (CreateSession)
	// only: User is the person's principal ("ldap:alice"), Groups the
	// directory groups mapped at login, Grants what they allow. Role and
	// Scope then only summarize Grants.
	User   string        `json:"user,omitempty"`
	Groups []string      `json:"groups,omitempty"`
	Grants []authz.Grant `json:"grants,omitempty"`
	Hash   []byte        `json:"-"`
}

// Session reports whether the token is a login session.
func (t Token) Session() bool { return t.User != "" }

// Expired reports whether the token has expired at now.
func (t Token) Expired(now time.Time) bool { return !t.Expires.IsZero() && !now.Before(t.Expires) }

// Principal returns the authz principal of the token.
// A session's principal is its person, with the session's grants.
func (t Token) Principal() authz.Principal {
	if t.Session() {
		return authz.Principal{ID: t.User, Role: t.Role, Scope: t.Scope, Grants: append([]authz.Grant{}, t.Grants...)}
	}
	return authz.Principal{ID: "token:" + t.ID, Role: t.Role, Scope: t.Scope}
}

// stored is the on-store form (with the hash).
type stored struct {
	Token
	Hash []byte `json:"hash"`
}

// Tokens keeps token records in a store.Backend and a cache in memory.
type Tokens struct {
	st  store.Backend
	now func() time.Time

	mu   sync.Mutex
	byID map[string]Token
}

func tokenKey(id string) string { return "token/" + id }

// NewTokens loads the tokens from st.
func NewTokens(ctx context.Context, st store.Backend) (*Tokens, error) {
	t := &Tokens{st: st, now: time.Now, byID: map[string]Token{}}
	err := st.View(ctx, func(tx store.Tx) error {
		return tx.List("token/", func(k string, v []byte) error {
			var s stored
			if err := json.Unmarshal(v, &s); err != nil {
				return fmt.Errorf("%s: %w: %v", k, store.ErrCorrupt, err)
			}
			s.Token.Hash = s.Hash
			t.byID[s.ID] = s.Token
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load tokens: %w", err)
	}
	return t, nil
}

// CreateOptions describe a new token.
type CreateOptions struct {
	Role        authz.Role
	TTL         time.Duration // 0 = no expiry (not allowed for agent join tokens)
	Scope       string        // name prefix; normalized
	Description string
	CreatedBy   string
	// AgentLabels, only for role agent, become the enrolled agent's labels.
	AgentLabels map[string]string
}

// ErrInvalid is returned (wrapped) by Create for options that make no
// token: a bad role, TTL or label set.
var ErrInvalid = errors.New("invalid token options")

// MaxJoinTTL bounds an agent join token's life.
const MaxJoinTTL = 7 * 24 * time.Hour

// Create makes a new token and returns it (the only time it is visible) with
// its record. Agent join tokens are one-time and must have a TTL.
func (t *Tokens) Create(ctx context.Context, o CreateOptions) (string, Token, error) {
	plain, rec, err := t.newRecord(o)
	if err != nil {
		return "", Token{}, err
	}
	if err := t.put(ctx, rec); err != nil {
		return "", Token{}, err
	}
	return plain, rec, nil
}

// newRecord checks o and makes a new token and its record, storing nothing.
func (t *Tokens) newRecord(o CreateOptions) (string, Token, error) {
	if _, err := authz.ParseRole(string(o.Role)); err != nil {
		return "", Token{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if o.TTL < 0 {
		return "", Token{}, fmt.Errorf("%w: ttl %s: must not be negative", ErrInvalid, o.TTL)
	}
	if o.Role == authz.Agent {
		if o.TTL == 0 {
			o.TTL = time.Hour
		}
		if o.TTL > MaxJoinTTL {
			return "", Token{}, fmt.Errorf("%w: ttl %s: join tokens live at most %s", ErrInvalid, o.TTL, MaxJoinTTL)
		}
	}
	if len(o.AgentLabels) > 0 {
		if o.Role != authz.Agent {
			return "", Token{}, fmt.Errorf("%w: agent_labels: only a join token (role agent) carries agent labels, not role %s", ErrInvalid, o.Role)
		}
		if err := policy.ValidateLabels(o.AgentLabels); err != nil {
			return "", Token{}, fmt.Errorf("%w: agent_labels: %w", ErrInvalid, err)
		}
	}
	id, plain, sum := newSecret()
	now := t.now().UTC()
	rec := Token{
		ID: id, Role: o.Role, Scope: authz.NormalizeScope(o.Scope), Description: o.Description,
		CreatedBy: o.CreatedBy, Created: now, OneTime: o.Role == authz.Agent, Hash: sum,
	}
	if len(o.AgentLabels) > 0 {
		rec.AgentLabels = maps.Clone(o.AgentLabels)
	}
	if o.TTL > 0 {
		rec.Expires = now.Add(o.TTL)
	}
	return plain, rec, nil
}

// SessionOptions describe a login session.
type SessionOptions struct {
	User   string // the principal, "ldap:alice"
	Groups []string
	Grants []authz.Grant // at least one
	TTL    time.Duration // > 0
}

// CreateSession makes a login session token: like a token, stored hashed,
// but it names a person and carries the grants of the groups they were in at
// login, and it always expires. Expired sessions are deleted in the same
// transaction, so that logins do not pile up records.
func (t *Tokens) CreateSession(ctx context.Context, o SessionOptions) (string, Token, error) {
	switch {
	case o.User == "":
		return "", Token{}, fmt.Errorf("%w: a session needs a user", ErrInvalid)
	case o.TTL <= 0:
		return "", Token{}, fmt.Errorf("%w: a session must expire", ErrInvalid)
	case len(o.Grants) == 0:
		return "", Token{}, fmt.Errorf("%w: a session needs at least one grant", ErrInvalid)
	}
	grants := make([]authz.Grant, 0, len(o.Grants))
	for _, g := range o.Grants {
		if r, err := authz.ParseRole(string(g.Role)); err != nil || r == authz.Agent {
			return "", Token{}, fmt.Errorf("%w: session grant role %q", ErrInvalid, g.Role)
		}
		g.Scope = authz.NormalizeScope(g.Scope)
		if !slices.Contains(grants, g) {
			grants = append(grants, g)
		}
	}
	// The record's scope summarizes: the one scope every grant shares, or
	// "" (only an unscoped admin lists or revokes it) when they differ.
	scope := grants[0].Scope
	for _, g := range grants[1:] {
		if g.Scope != scope {
			scope = ""
		}
	}
	id, plain, sum := newSecret()
	now := t.now().UTC()
	rec := Token{
		ID: id, Role: authz.WidestRole(grants), Scope: scope, Description: "login session of " + o.User,
		CreatedBy: o.User, Created: now, Expires: now.Add(o.TTL), Hash: sum,
		User: o.User, Groups: slices.Clone(o.Groups), Grants: grants,
	}
	t.mu.Lock()
	var expired []string
	for id, r := range t.byID {
		if r.Session() && r.Expired(now) {
			expired = append(expired, id)
		}
	}
	t.mu.Unlock()
	err := t.st.Update(ctx, func(tx store.Tx) error {
		for _, id := range expired {
			if err := tx.Delete(tokenKey(id)); err != nil {
				return err
			}
		}
		b, err := json.Marshal(stored{Token: rec, Hash: rec.Hash})
		if err != nil {
			return err
		}
		return tx.Put(tokenKey(rec.ID), b)
	})
	if err != nil {
		return "", Token{}, err
	}
	t.mu.Lock()
	for _, id := range expired {
		delete(t.byID, id)
	}
	t.byID[rec.ID] = rec
	t.mu.Unlock()
	return plain, rec, nil
}

// newSecret makes a token id, the token and the hash of its secret part.
func newSecret() (id, plain string, sum []byte) {
	idb := make([]byte, 8)
	sec := make([]byte, 32)
	rand.Read(idb)
	rand.Read(sec)
	id = hex.EncodeToString(idb)
	plain = tokenPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(sec)
	h := sha256.Sum256(sec)
	clear(sec)
	return id, plain, h[:]
}

func (t *Tokens) put(ctx context.Context, rec Token) error {
	err := t.st.Update(ctx, func(tx store.Tx) error {
		b, err := json.Marshal(stored{Token: rec, Hash: rec.Hash})
		if err != nil {
			return err
		}
		return tx.Put(tokenKey(rec.ID), b)
	})
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.byID[rec.ID] = rec
	t.mu.Unlock()
	return nil
}

// parse splits "coffer_<id>_<secret>" and hashes the secret part.
func parse(plain string) (id string, sum [32]byte, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(plain), tokenPrefix)
	if !found {
		return "", sum, false
	}
	id, enc, found := strings.Cut(rest, "_")
	if !found || len(id) != 16 {
		return "", sum, false
	}
	sec, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || len(sec) != 32 {
		return "", sum, false
	}
	sum = sha256.Sum256(sec)
	clear(sec)
	return id, sum, true
}

// lookup finds the live record for plain under t.mu.
func (t *Tokens) lookup(plain string) (Token, error) {
	id, sum, ok := parse(plain)
	if !ok {
		return Token{}, ErrUnauthenticated
	}
	rec, found := t.byID[id]
	if !found || subtle.ConstantTimeCompare(rec.Hash, sum[:]) != 1 || rec.Expired(t.now()) || rec.Used {
		return Token{}, ErrUnauthenticated
	}
	return rec, nil
}

// Authenticate checks a person's token. Join tokens are not accepted here.
func (t *Tokens) Authenticate(plain string) (Token, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec, err := t.lookup(plain)
	if err != nil {
		return Token{}, err
	}
	if rec.OneTime {
		return Token{}, ErrUnauthenticated
	}
	return rec, nil
}

// CheckJoin checks an agent join token like ConsumeJoin but does not spend
// it: a caller uses it to refuse a request it cannot serve before the token
// is gone. Only ConsumeJoin admits an agent.
func (t *Tokens) CheckJoin(plain string) (Token, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec, err := t.lookup(plain)
	if err == nil && rec.Role != authz.Agent {
		err = ErrUnauthenticated
	}
	if err != nil {
		return Token{}, err
	}
	return rec, nil
}

// ConsumeJoin checks an agent join token and marks it used, atomically: a
// second use, even concurrent, fails.
func (t *Tokens) ConsumeJoin(ctx context.Context, plain string) (Token, error) {
	t.mu.Lock()
	rec, err := t.lookup(plain)
	if err == nil && rec.Role != authz.Agent {
		err = ErrUnauthenticated
	}
	if err != nil {
		t.mu.Unlock()
		return Token{}, err
	}
	rec.Used = true
	t.byID[rec.ID] = rec
	t.mu.Unlock()
	// Spent in the store by a compare-and-swap: on a store shared by
	// several servers another one may have spent it (or it was revoked)
	// since this server's cache saw it.
	if err := t.consume(ctx, rec); err != nil {
		return Token{}, err
	}
	return rec, nil
}

// consume marks rec used in the store, in a transaction that finds it
// there, unused: else ErrUnauthenticated.
func (t *Tokens) consume(ctx context.Context, rec Token) error {
	return t.st.Update(ctx, func(tx store.Tx) error {
		v, err := tx.Get(tokenKey(rec.ID))
		if errors.Is(err, store.ErrNotFound) {
			return ErrUnauthenticated
		}
		if err != nil {
			return err
		}
		var s stored
		if err := json.Unmarshal(v, &s); err != nil {
			return fmt.Errorf("%s: %w: %v", tokenKey(rec.ID), store.ErrCorrupt, err)
		}
		if s.Used {
			return ErrUnauthenticated
		}
		b, err := json.Marshal(stored{Token: rec, Hash: rec.Hash})
		if err != nil {
			return err
		}
		return tx.Put(tokenKey(rec.ID), b)
	})
}

// List returns all token records, newest first.
func (t *Tokens) List() []Token {
	t.mu.Lock()
	out := make([]Token, 0, len(t.byID))
	for _, r := range t.byID {
		out = append(out, r)
	}
	t.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out
}

// Lookup returns the record of token id, if there is one.
func (t *Tokens) Lookup(id string) (Token, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec, ok := t.byID[id]
	return rec, ok
}

// errFound stops a List at its first key.
var errFound = errors.New("found")

// ErrNotFound is returned by Revoke for an unknown id.
var ErrNotFound = errors.New("no such token")

// Revoke deletes a token; it stops working at once.
func (t *Tokens) Revoke(ctx context.Context, id string) error {
	t.mu.Lock()
	_, ok := t.byID[id]
	t.mu.Unlock()
	if !ok {
		return fmt.Errorf("token %s: %w", id, ErrNotFound)
	}
	if err := t.st.Update(ctx, func(tx store.Tx) error { return tx.Delete(tokenKey(id)) }); err != nil {
		return err
	}
	t.mu.Lock()
	delete(t.byID, id)
	t.mu.Unlock()
	return nil
}

// Bootstrap creates the first admin token when the store has no token at
// all, and writes it to path (mode 0600, never overwriting a file). It
// returns whether it made one.
func (t *Tokens) Bootstrap(ctx context.Context, path string) (bool, error) {
	t.mu.Lock()
	n := len(t.byID)
	t.mu.Unlock()
	if n > 0 {
		return false, nil
	}
	plain, rec, err := t.newRecord(CreateOptions{Role: authz.Admin, Description: "bootstrap admin", CreatedBy: "system"})
	if err != nil {
		return false, err
	}
	// Stored only if the store holds no token, checked in the same
	// transaction: of several servers starting on one empty shared store,
	// one makes the bootstrap token.
	made := false
	err = t.st.Update(ctx, func(tx store.Tx) error {
		made = false
		err := tx.List("token/", func(string, []byte) error { return errFound })
		switch {
		case errors.Is(err, errFound):
			return nil
		case err != nil:
			return err
		}
		b, err := json.Marshal(stored{Token: rec, Hash: rec.Hash})
		if err != nil {
			return err
		}
		made = true
		return tx.Put(tokenKey(rec.ID), b)
	})
	if err != nil || !made {
		return false, err
	}
	t.mu.Lock()
	t.byID[rec.ID] = rec
	t.mu.Unlock()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, fmt.Errorf("write bootstrap admin token: %w", err)
	}
	_, err = f.WriteString(plain + "\n")
	if err2 := f.Close(); err == nil {
		err = err2
	}
	return true, err
}
