package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
)

// The API tests check every response they get against openapi.yaml: the
// harness's server is wrapped in specCheck, which validates each response
// (status documented for the operation, content type, body schema) with
// kin-openapi and also fails on JSON fields the schema does not name, so
// the document cannot fall behind the handlers.

var (
	specOnce   sync.Once
	specDoc    *openapi3.T
	specRoutes []specRoute
	specErr    error
)

// specRoute is one path template of the document as a pattern. A
// parameter at the end of a path takes the rest of it, slashes included,
// as the server's {name...} routes do.
type specRoute struct {
	template string
	re       *regexp.Regexp
	params   []string
	literal  int // characters outside parameters: more specific first
}

func loadSpec() (*openapi3.T, []specRoute, error) {
	specOnce.Do(func() {
		raw, err := os.ReadFile("openapi.yaml")
		if err != nil {
			specErr = err
			return
		}
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(raw)
		if err != nil {
			specErr = fmt.Errorf("openapi.yaml: %w", err)
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			specErr = fmt.Errorf("openapi.yaml is not a valid OpenAPI document: %w", err)
			return
		}
		param := regexp.MustCompile(`\{([^}]+)\}`)
		for tmpl := range doc.Paths.Map() {
			r := specRoute{template: tmpl}
			var pat strings.Builder
			pat.WriteString("^")
			rest := tmpl
			for {
				loc := param.FindStringSubmatchIndex(rest)
				if loc == nil {
					pat.WriteString(regexp.QuoteMeta(rest))
					r.literal += len(rest)
					break
				}
				pat.WriteString(regexp.QuoteMeta(rest[:loc[0]]))
				r.literal += loc[0]
				r.params = append(r.params, rest[loc[2]:loc[3]])
				if loc[1] == len(rest) {
					pat.WriteString("(.+)")
				} else {
					pat.WriteString("([^/]+)")
				}
				rest = rest[loc[1]:]
			}
			pat.WriteString("$")
			r.re = regexp.MustCompile(pat.String())
			specRoutes = append(specRoutes, r)
		}
		sort.Slice(specRoutes, func(i, j int) bool { return specRoutes[i].literal > specRoutes[j].literal })
		specDoc = doc
	})
	return specDoc, specRoutes, specErr
}

// TestOpenAPIDocumentIsValid: the document itself loads and validates.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	if _, _, err := loadSpec(); err != nil {
		t.Fatal(err)
	}
}

// findRoute returns the document's operation for a request.
func findRoute(doc *openapi3.T, routes []specRoute, r *http.Request) (*routers.Route, map[string]string, bool) {
	for _, sr := range routes {
		m := sr.re.FindStringSubmatch(r.URL.Path)
		if m == nil {
			continue
		}
		item := doc.Paths.Value(sr.template)
		op := item.GetOperation(r.Method)
		if op == nil {
			return nil, nil, true
		}
		params := map[string]string{}
		for i, p := range sr.params {
			params[p] = m[i+1]
		}
		return &routers.Route{Spec: doc, Path: sr.template, PathItem: item, Method: r.Method, Operation: op}, params, true
	}
	return nil, nil, false
}

// specCheck wraps h so that every response is checked against the
// document; problems are test errors.
func specCheck(t *testing.T, h http.Handler) http.Handler {
	doc, routes, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tw := &teeWriter{ResponseWriter: w}
		h.ServeHTTP(tw, r)
		if tw.status == 0 {
			tw.status = http.StatusOK
		}
		hdr := tw.Header().Clone()
		if hdr.Get("Content-Type") == "" && tw.body.Len() > 0 {
			// What net/http sends for a handler that set none.
			hdr.Set("Content-Type", http.DetectContentType(tw.body.Bytes()))
		}
		if err := checkResponse(doc, routes, r, tw.status, hdr, tw.body.Bytes()); err != nil {
			t.Errorf("%s %s → %d: the response does not match openapi.yaml: %v\nbody: %.600s", r.Method, r.URL.RequestURI(), tw.status, err, tw.body.String())
		}
	})
}

func checkResponse(doc *openapi3.T, routes []specRoute, r *http.Request, status int, header http.Header, body []byte) error {
	route, params, pathKnown := findRoute(doc, routes, r)
	switch {
	case route == nil && !pathKnown && status == http.StatusNotFound:
		return nil // the router's "404 page not found" for an unknown path
	case route == nil && pathKnown && status == http.StatusMethodNotAllowed:
		return nil // the router's 405 for a method the path does not have
	case route == nil:
		return fmt.Errorf("the operation is not in the document")
	}
	ct, _, _ := mime.ParseMediaType(header.Get("Content-Type"))
	opts := &openapi3filter.Options{
		IncludeResponseStatus: true,
		MultiError:            true,
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
		// Bodies other than JSON (text/plain health answers, YAML of the
		// document itself) are checked for their content type below.
		ExcludeResponseBody: ct != "application/json",
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: r, PathParams: params, Route: route, Options: opts},
		Status:                 status,
		Header:                 header,
		Options:                opts,
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(r.Context(), in); err != nil {
		return err
	}
	resp := route.Operation.Responses.Status(status)
	if resp == nil || resp.Value == nil {
		return nil
	}
	if len(resp.Value.Content) == 0 {
		if len(body) > 0 {
			return fmt.Errorf("the document says %d has no body, the handler sent %d bytes", status, len(body))
		}
		return nil
	}
	media := resp.Value.Content.Get(ct)
	if media == nil {
		return fmt.Errorf("content type %q is not documented for %d", ct, status)
	}
	if ct != "application/json" || media.Schema == nil {
		return nil
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("body is not JSON: %w", err)
	}
	if extra := undocumented(media.Schema.Value, v, "body"); len(extra) > 0 {
		return fmt.Errorf("fields the schema does not describe: %s", strings.Join(extra, ", "))
	}
	return nil
}

// undocumented lists the object fields in v that schema does not describe
// (neither in properties, of the schema or of its allOf/oneOf/anyOf parts,
// nor by additionalProperties).
func undocumented(s *openapi3.Schema, v any, at string) []string {
	if s == nil {
		return nil
	}
	var out []string
	switch v := v.(type) {
	case map[string]any:
		props, extra, anyExtra := objectShape(s)
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch ps, ok := props[k]; {
			case ok:
				out = append(out, undocumented(ps, v[k], at+"."+k)...)
			case extra != nil:
				out = append(out, undocumented(extra, v[k], at+"."+k)...)
			case !anyExtra:
				out = append(out, at+"."+k)
			}
		}
	case []any:
		if s.Items != nil {
			for i, e := range v {
				out = append(out, undocumented(s.Items.Value, e, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	return out
}

// objectShape collects an object schema's properties across its
// composition, and what it allows beyond them.
func objectShape(s *openapi3.Schema) (props map[string]*openapi3.Schema, extra *openapi3.Schema, anyExtra bool) {
	props = map[string]*openapi3.Schema{}
	var visit func(*openapi3.Schema)
	visit = func(s *openapi3.Schema) {
		if s == nil {
			return
		}
		for k, p := range s.Properties {
			props[k] = p.Value
		}
		if ap := s.AdditionalProperties; ap.Schema != nil {
			extra = ap.Schema.Value
		} else if ap.Has != nil && *ap.Has {
			anyExtra = true
		}
		for _, group := range []openapi3.SchemaRefs{s.AllOf, s.OneOf, s.AnyOf} {
			for _, sub := range group {
				visit(sub.Value)
			}
		}
	}
	visit(s)
	return props, extra, anyExtra
}

// teeWriter passes a response through and keeps a copy.
type teeWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (w *teeWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *teeWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

// Flush keeps streaming answers streaming.
func (w *teeWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *teeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestSpecCheckCatchesDrift: the checker itself fails a response with an
// undocumented status, a field of the wrong type, an undocumented field,
// and a body where none is documented; it passes a conforming one.
func TestSpecCheckCatchesDrift(t *testing.T) {
	doc, routes, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	req := func(method, path string) *http.Request {
		r, _ := http.NewRequest(method, "http://x"+path, nil)
		return r
	}
	jsonHdr := http.Header{"Content-Type": {"application/json"}}
	verify := `{"ok": true, "records": 3, "head": "abc"}`
	for _, tc := range []struct {
		name   string
		r      *http.Request
		status int
		hdr    http.Header
		body   string
		bad    bool
	}{
		{"conforming", req("GET", "/v1/audit/verify"), 200, jsonHdr, verify, false},
		{"undocumented status", req("GET", "/v1/audit/verify"), 418, jsonHdr, `{"error": "x"}`, true},
		{"wrong type", req("GET", "/v1/audit/verify"), 200, jsonHdr, `{"ok": "yes", "records": 3, "head": "abc"}`, true},
		{"undocumented field", req("GET", "/v1/audit/verify"), 200, jsonHdr, `{"ok": true, "records": 3, "head": "abc", "extra": 1}`, true},
		{"missing required field", req("GET", "/v1/audit/verify"), 200, jsonHdr, `{"ok": true}`, true},
		{"nested undocumented field", req("GET", "/v1/secrets/a/b"), 200, jsonHdr,
			`{"name": "a/b", "current_version": 1, "created": "2026-01-02T15:04:05Z", "updated": "2026-01-02T15:04:05Z", "versions": [], "holders": [{"agent": "n", "container_id": "c", "container_name": "w", "version": 1, "pending": false, "secret_value": "x"}], "pending": 0}`, true},
		{"body on 204", req("DELETE", "/v1/tokens/0123456789abcdef"), 204, jsonHdr, `{}`, true},
		{"undocumented operation", req("PATCH", "/v1/secrets/a"), 200, jsonHdr, `{}`, true},
		{"router 404", req("GET", "/v2/nothing"), 404, http.Header{"Content-Type": {"text/plain"}}, "404 page not found\n", false},
		{"router 405", req("PATCH", "/v1/secrets/a"), 405, http.Header{"Content-Type": {"text/plain"}}, "Method Not Allowed\n", false},
	} {
		err := checkResponse(doc, routes, tc.r, tc.status, tc.hdr, []byte(tc.body))
		if (err != nil) != tc.bad {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestEveryRouteIsDocumented: each route api.go registers is an operation
// of openapi.yaml (the response check above sees only routes tests call).
func TestEveryRouteIsDocumented(t *testing.T) {
	doc, _, err := loadSpec()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("api.go")
	if err != nil {
		t.Fatal(err)
	}
	routes := regexp.MustCompile(`m\.Handle(?:Func)?\("([A-Z]+) (/[^"]*)"`).FindAllStringSubmatch(string(src), -1)
	if len(routes) < 15 {
		t.Fatalf("found only %d routes in api.go", len(routes))
	}
	for _, r := range routes {
		method, path := r[1], strings.ReplaceAll(r[2], "...}", "}")
		item := doc.Paths.Value(path)
		if item == nil || item.GetOperation(method) == nil {
			t.Errorf("%s %s is not in openapi.yaml", method, path)
		}
	}
}
