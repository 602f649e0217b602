package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// apiError is an answer of the API other than 2xx: its status and the
// message it gave (the API's messages never carry values).
type apiError struct {
	Status int
	Msg    string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Msg) }

// errSessionEnded: the API no longer accepts the session's token (expired
// or revoked).
var errSessionEnded = errors.New("session ended")

// recorder is the in-process response: the API's answer, kept in memory.
type recorder struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.body.Write(p)
}
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

// call is one in-process API request.
type call struct {
	method, path string
	query        url.Values
	body         []byte      // JSON; the caller zeroes it if it held a value
	header       http.Header // extra request headers (If-Match, ...)
	token        string      // "" for none
}

// do sends c to the API as the browser's request r (same context and
// client address, so that the API's throttle and audit records see the
// person's address) and decodes a 2xx JSON answer into out (if not nil).
func (con *Console) do(r *http.Request, c call, out any) (int, error) {
	u := c.path
	if len(c.query) > 0 {
		u += "?" + c.query.Encode()
	}
	var body io.Reader = http.NoBody
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	req, err := http.NewRequestWithContext(r.Context(), c.method, u, body)
	if err != nil {
		return 0, fmt.Errorf("console: API request: %w", err)
	}
	req.RemoteAddr = r.RemoteAddr
	req.Host = r.Host
	req.TLS = r.TLS
	req.Header.Set("User-Agent", "coffer-console")
	if c.body != nil {
		req.Header.Set("Content-Type", "application/json")
		req.ContentLength = int64(len(c.body))
	}
	for k, vs := range c.header {
		req.Header[k] = vs
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	rec := &recorder{h: http.Header{}}
	con.cfg.API.ServeHTTP(rec, req)
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	if rec.code >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		msg := http.StatusText(rec.code)
		if json.Unmarshal(rec.body.Bytes(), &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return rec.code, &apiError{Status: rec.code, Msg: msg}
	}
	if out != nil && rec.code != http.StatusNoContent {
		if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
			return rec.code, fmt.Errorf("console: API answer to %s %s: %w", c.method, c.path, err)
		}
	}
	return rec.code, nil
}

// as calls the API as session s. An answer of 401 ends the session (the
// token expired or was revoked): the error is errSessionEnded.
func (con *Console) as(s *sess, r *http.Request, c call, out any) (int, error) {
	c.token = s.token
	code, err := con.do(r, c, out)
	if code == http.StatusUnauthorized {
		con.sessions.remove(s)
		return code, errSessionEnded
	}
	return code, err
}

// escapePath escapes each '/'-separated element of a name for a URL path.
func escapePath(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}
