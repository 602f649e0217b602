package api

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"coffer/internal/audit"
	"coffer/internal/authn"
	"coffer/internal/authz"
	"coffer/internal/directory"
)

// Login enables directory logins at POST /v1/login.
type Login struct {
	Directory directory.Directory
	Groups    directory.Mapping // group DN -> grant
	TTL       time.Duration     // a session's life
	// Source prefixes principals: "ldap" makes "ldap:alice".
	Source string
	// Timeout bounds one login's directory work; default 30s.
	Timeout time.Duration
	// MaxConcurrent bounds the logins waiting on the directory at once
	// (default 32): a slow or hung directory ties up that many, not one
	// goroutine and connection per request. Past it, 503.
	MaxConcurrent int

	slotsOnce sync.Once
	slots     chan struct{}
}

func (l *Login) acquire() bool {
	l.slotsOnce.Do(func() {
		n := l.MaxConcurrent
		if n <= 0 {
			n = 32
		}
		l.slots = make(chan struct{}, n)
	})
	select {
	case l.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (l *Login) release() { <-l.slots }

// LoginRequest is the body of POST /v1/login.
type LoginRequest struct {
	Username string      `json:"username"`
	Password secretBytes `json:"password"`
}

// LoginResponse carries the new session token: the only time it is shown.
type LoginResponse struct {
	Token   string        `json:"token"`
	ID      string        `json:"id"`   // the session's token id (coffer token revoke ID)
	User    string        `json:"user"` // the principal, as in audit records: ldap:alice
	Groups  []string      `json:"groups"`
	Grants  []authz.Grant `json:"grants"`
	Expires time.Time     `json:"expires"`
}

// LoginMethods is the answer of GET /v1/login: how people may log in here.
type LoginMethods struct {
	// Directory is true when POST /v1/login takes a directory username
	// and password (an ldap: section is configured).
	Directory bool `json:"directory"`
}

// loginMethods answers GET /v1/login, without authentication: a login
// page must know whether to ask for a password before anyone logged in.
// It says nothing of the directory beyond that it is configured.
func (s *Server) loginMethods(w http.ResponseWriter, _ *http.Request) {
	lc := s.cfg.Login
	writeJSON(w, http.StatusOK, LoginMethods{Directory: lc != nil && lc.Directory != nil})
}

// loginFailed is the one answer to a wrong password, an unknown or
// disabled user and a user in no mapped group.
const loginFailed = "invalid username or password, or no access"

// loginBody bounds a login request.
const loginBody = 4 << 10

func (s *Server) login(w http.ResponseWriter, hr *http.Request) {
	src := sourceOf(hr)
	ctx := hr.Context()
	lc := s.cfg.Login
	if lc == nil || lc.Directory == nil {
		writeError(w, http.StatusNotFound, "directory logins are not configured on this server (no ldap: section)")
		return
	}
	if wait := s.throttle.blocked(src); wait > 0 {
		tooMany(w, wait)
		return
	}
	// The body is read into one buffer that is zeroed afterwards, with
	// the password decoded into its own zeroed buffer: no string copy.
	body, err := io.ReadAll(http.MaxBytesReader(nil, hr.Body, loginBody))
	defer clear(body)
	var req LoginRequest
	defer func() { clear(req.Password) }()
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body too large: limit is %d bytes", loginBody))
			return
		}
		writeError(w, http.StatusBadRequest, "could not read the body")
		return
	}
	if err := decodeLogin(body, &req); err != nil {
		s.record(ctx, audit.Event{Actor: "anonymous", Action: "session.login", Result: "invalid", Source: src})
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := directory.CheckInput(req.Username, req.Password); err != nil {
		s.record(ctx, audit.Event{Actor: "anonymous", Action: "session.login", Result: "invalid", Source: src})
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	principal := lc.Source + ":" + directory.CanonicalUser(req.Username)
	userKey := "user:" + principal
	if wait := s.users.blocked(userKey); wait > 0 {
		tooMany(w, wait)
		return
	}
	if !lc.acquire() {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "too many logins in progress: try again in a moment")
		return
	}
	defer lc.release()
	timeout := lc.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	id, err := lc.Directory.Authenticate(actx, req.Username, req.Password)
	cancel()
	clear(req.Password)
	clear(body)
	var grants []authz.Grant
	if err == nil {
		if grants = lc.Groups.Grants(id.Groups); len(grants) == 0 {
			err = directory.Refused(directory.ReasonNoGroup)
		}
	}
	failed := audit.Event{Actor: "anonymous", Action: "session.login", Object: principal, Source: src}
	switch {
	case errors.Is(err, directory.ErrInvalidCredentials):
		s.throttle.fail(src)
		s.users.fail(userKey)
		failed.Result, failed.Details = "unauthenticated", map[string]string{"reason": directory.ReasonOf(err)}
		if s.record(ctx, failed) != nil {
			writeError(w, http.StatusInternalServerError, "audit trail unavailable: request not confirmed")
			return
		}
		writeError(w, http.StatusUnauthorized, loginFailed)
		return
	case err != nil:
		s.log.Error("directory login failed", "user", principal, "err", err)
		failed.Result, failed.Details = "error", map[string]string{"reason": "directory_unavailable"}
		if s.record(ctx, failed) != nil {
			writeError(w, http.StatusInternalServerError, "audit trail unavailable: request not confirmed")
			return
		}
		writeError(w, http.StatusServiceUnavailable, "the directory is unavailable: try again later (existing sessions keep working)")
		return
	}
	// The groups kept on the session are the mapped ones, normalized.
	var groups []string
	for _, g := range id.Groups {
		if n, err := directory.NormalizeDN(g); err == nil {
			if _, ok := lc.Groups[n]; ok {
				groups = append(groups, n)
			}
		}
	}
	principal = lc.Source + ":" + id.User
	plain, rec, err := s.cfg.Tokens.CreateSession(ctx, authn.SessionOptions{User: principal, Groups: groups, Grants: grants, TTL: lc.TTL})
	if err != nil {
		s.log.Error("create session", "user", principal, "err", err)
		writeError(w, http.StatusInternalServerError, "could not create the session")
		return
	}
	s.throttle.ok(src)
	s.users.ok(userKey)
	ev := audit.Event{Actor: principal, Action: "session.login", Object: "token:" + rec.ID, Result: "ok", Source: src,
		Details: map[string]string{"groups": strings.Join(groups, "; "), "expires": rec.Expires.Format(time.RFC3339)}}
	if s.record(ctx, ev) != nil {
		// Unconfirmed: the session must not outlive the missing record.
		s.cfg.Tokens.Revoke(context.WithoutCancel(ctx), rec.ID)
		writeError(w, http.StatusInternalServerError, "audit trail unavailable: request not confirmed")
		return
	}
	writeJSON(w, http.StatusOK, LoginResponse{Token: plain, ID: rec.ID, User: principal, Groups: groups, Grants: rec.Grants, Expires: rec.Expires})
}

func tooMany(w http.ResponseWriter, wait time.Duration) {
	w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
	writeError(w, http.StatusTooManyRequests, "too many failed authentication attempts; retry later")
}

// logout revokes the calling session.
func (s *Server) logout(r *request) (int, any, error) {
	r.object = "token:" + r.tok.ID
	if !r.tok.Session() {
		return 0, nil, fmt.Errorf("%w: this token is not a login session: revoke it with coffer token revoke %s", errBadRequest, r.tok.ID)
	}
	if err := s.cfg.Tokens.Revoke(r.Context(), r.tok.ID); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

// decodeLogin reads the login body strictly (unknown fields, trailing data
// and wrong types are errors naming the field) without copying the password
// anywhere but req.Password. encoding/json hands UnmarshalJSON a slice of
// body itself.
func decodeLogin(body []byte, req *LoginRequest) error {
	if len(body) == 0 {
		return fmt.Errorf("%w: empty body, JSON expected", errBadRequest)
	}
	var keys map[string]skip
	if err := json.Unmarshal(body, &keys); err != nil {
		return fmt.Errorf("%w: malformed JSON: %v", errBadRequest, sanitize(err))
	}
	for k := range keys {
		if k != "username" && k != "password" {
			return fmt.Errorf("%w: malformed JSON: json: unknown field %q", errBadRequest, k)
		}
	}
	if err := json.Unmarshal(body, req); err != nil {
		var pe *passwordError
		if errors.As(err, &pe) {
			return fmt.Errorf("%w: password: %s", errBadRequest, pe.msg)
		}
		return fmt.Errorf("%w: malformed JSON: %v", errBadRequest, sanitize(err))
	}
	return nil
}

// skip unmarshals into nothing (and copies nothing).
type skip struct{}

func (*skip) UnmarshalJSON([]byte) error { return nil }

// secretBytes is a JSON string decoded into a fresh byte slice that the
// caller zeroes; it is never turned into a Go string.
type secretBytes []byte

type passwordError struct{ msg string }

func (e *passwordError) Error() string { return e.msg }

// UnmarshalJSON decodes a JSON string (RFC 8259 escapes).
func (b *secretBytes) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil // like encoding/json: null leaves the field as it is
	}
	if len(data) < 2 || data[0] != '"' || data[len(data)-1] != '"' {
		return &passwordError{"a JSON string expected"}
	}
	in := data[1 : len(data)-1]
	if !utf8.Valid(in) {
		return &passwordError{"not UTF-8"}
	}
	out := make([]byte, 0, len(in))
	for i := 0; i < len(in); i++ {
		c := in[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		if i+1 >= len(in) {
			clear(out)
			return &passwordError{"bad escape"}
		}
		i++
		switch in[i] {
		case '"', '\\', '/':
			out = append(out, in[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, n := unicodeEscape(in[i+1:])
			if n == 0 {
				clear(out)
				return &passwordError{"bad \\u escape"}
			}
			if utf16.IsSurrogate(r) {
				r2, n2 := rune(-1), 0
				if rest := in[i+1+n:]; len(rest) >= 2 && rest[0] == '\\' && rest[1] == 'u' {
					r2, n2 = unicodeEscape(rest[2:])
				}
				// Only a low surrogate completes the pair; otherwise the
				// lone one is U+FFFD and the next escape stands alone.
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					r, n = d, n+2+n2
				} else {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
			i += n
		default:
			clear(out)
			return &passwordError{"bad escape"}
		}
	}
	clear(*b) // a repeated key: the first value is zeroed too
	*b = out
	return nil
}

// unicodeEscape reads the 4 hex digits after \u.
func unicodeEscape(p []byte) (rune, int) {
	if len(p) < 4 {
		return 0, 0
	}
	var v [2]byte
	if _, err := hex.Decode(v[:], p[:4]); err != nil {
		return 0, 0
	}
	return rune(v[0])<<8 | rune(v[1]), 4
}
