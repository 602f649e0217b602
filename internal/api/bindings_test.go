package api_test

import (
	"reflect"
	"strings"
	"testing"

	"coffer/internal/authz"
)

// A binding's host selector and image-label requirements over the API.
func TestBindingHostsAndImageLabels(t *testing.T) {
	e := newEnv(t)
	e.json(e.admin, "PUT", "/v1/secrets/payments/db", map[string]any{"value": b64("x")}, nil)
	var b map[string]any
	code := e.json(e.admin, "PUT", "/v1/bindings/prod-db", map[string]any{
		"secret": "payments/db", "selector": "image.label/app in (payments),app=api", "image": "registry.example.com/pay/*",
		"hosts": " zone in (eu-2,eu-1), env==prod",
	}, &b)
	if code != 200 || b["hosts"] != "env=prod,zone in (eu-1,eu-2)" || b["selector"] != "app=api,image.label/app=payments" {
		t.Fatalf("binding = %d %v", code, b)
	}
	var shown map[string]any
	if e.json(e.admin, "GET", "/v1/bindings/prod-db", nil, &shown); !reflect.DeepEqual(shown, b) {
		t.Fatalf("stored %v, answered %v", shown, b)
	}
	var list []map[string]any
	if e.json(e.admin, "GET", "/v1/bindings", nil, &list); len(list) != 1 || list[0]["hosts"] != b["hosts"] {
		t.Fatalf("list = %v", list)
	}

	payImage := "registry.example.com/pay/api:1.2"
	prodEU := map[string]string{"env": "prod", "zone": "eu-1"}
	tests := []struct {
		desc string
		req  map[string]any
		want int // grants
	}{
		{"all of it", map[string]any{"labels": map[string]string{"app": "api"}, "image_labels": map[string]string{"app": "payments"}, "host_labels": prodEU, "image": payImage}, 1},
		{"wrong host", map[string]any{"labels": map[string]string{"app": "api"}, "image_labels": map[string]string{"app": "payments"}, "host_labels": map[string]string{"env": "dev", "zone": "eu-1"}, "image": payImage}, 0},
		{"no host labels", map[string]any{"labels": map[string]string{"app": "api"}, "image_labels": map[string]string{"app": "payments"}, "image": payImage}, 0},
		{"host labels claimed by the container", map[string]any{"labels": map[string]string{"app": "api", "env": "prod", "zone": "eu-1"}, "image_labels": map[string]string{"app": "payments"}, "image": payImage}, 0},
		{"image label claimed by the container", map[string]any{"labels": map[string]string{"app": "api", "image.label/app": "payments"}, "host_labels": prodEU, "image": payImage}, 0},
		{"untrusted image", map[string]any{"labels": map[string]string{"app": "api"}, "image_labels": map[string]string{"app": "payments"}, "host_labels": prodEU, "image": "evil.example.com/pay/api:1.2"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			var grants []map[string]any
			if code := e.json(e.admin, "POST", "/v1/evaluate", tt.req, &grants); code != 200 || len(grants) != tt.want {
				t.Fatalf("evaluate = %d %v, want %d grants", code, grants, tt.want)
			}
		})
	}
	// A scoped token only sees grants of its own secrets.
	var grants []map[string]any
	if e.json(e.token(authz.Viewer, "billing/"), "POST", "/v1/evaluate", tests[0].req, &grants); len(grants) != 0 {
		t.Fatalf("out-of-scope grants: %v", grants)
	}
}

// Bad host selectors, image-label selectors without a trusted image and
// bad evaluate label sets: 400 naming the field, and nothing changes.
func TestBindingNeedToKnowBadInput(t *testing.T) {
	e := newEnv(t)
	e.json(e.admin, "PUT", "/v1/secrets/payments/db", map[string]any{"value": b64("x")}, nil)
	var before map[string]any
	if code := e.json(e.admin, "PUT", "/v1/bindings/b", map[string]any{"secret": "payments/db", "selector": "app=web", "hosts": "env=prod"}, &before); code != 200 {
		t.Fatalf("setup: %d", code)
	}
	tests := []struct {
		desc, method, path, body string
		says                     string
	}{
		{"hosts unparsable", "PUT", "/v1/bindings/b", `{"secret":"payments/db","selector":"app=web","hosts":"env in (prod"}`, `hosts \"env in (prod\"`},
		{"hosts blank", "PUT", "/v1/bindings/b", `{"secret":"payments/db","selector":"app=web","hosts":" "}`, `hosts \" \": no requirement`},
		{"hosts with '>'", "PUT", "/v1/bindings/b", `{"secret":"payments/db","selector":"app=web","hosts":"cores>4"}`, `hosts \"cores\u003e4\": requirement`},
		{"hosts on image labels", "PUT", "/v1/bindings/b", `{"secret":"payments/db","selector":"app=web","hosts":"image.label/app=x"}`, `hosts \"image.label/app=x\"`},
		{"hosts wrong type", "PUT", "/v1/bindings/b", `{"secret":"payments/db","selector":"app=web","hosts":["env=prod"]}`, `field \"hosts\": wrong type array`},
		{"hosts too long", "PUT", "/v1/bindings/b", `{"secret":"payments/db","selector":"app=web","hosts":"` + strings.Repeat("a=b,", 1100) + `a=b"}`, "longer than 4096 bytes"},
		{"image label without image", "PUT", "/v1/bindings/b", `{"secret":"payments/db","selector":"image.label/app=web"}`, `image \"\": the selector uses image.label/ keys, which the image's author chooses`},
		{"image label with any image", "PUT", "/v1/bindings/b", `{"secret":"payments/db","selector":"image.label/app=web","image":"**"}`, `image \"**\": the selector uses image.label/ keys`},
		{"image label with any registry", "PUT", "/v1/bindings/b", `{"secret":"payments/db","selector":"image.label/app=web","image":"**/web:*"}`, "which images it trusts"},
		{"evaluate bad host label key", "POST", "/v1/evaluate", `{"labels":{},"host_labels":{"-env":"prod"}}`, `host_labels: invalid labels: label key \"-env\"`},
		{"evaluate bad host label value", "POST", "/v1/evaluate", `{"labels":{},"host_labels":{"env":"pr od"}}`, `host_labels: invalid labels: label \"env\": value`},
		{"evaluate bad image label", "POST", "/v1/evaluate", `{"labels":{},"image_labels":{"a/b/c":"x"}}`, `image_labels: invalid labels: label key \"a/b/c\"`},
		{"evaluate too many image labels", "POST", "/v1/evaluate", `{"labels":{},"image_labels":{` + manyLabels(65) + `}}`, "image_labels: invalid labels: 65 labels, at most 64"},
		{"evaluate host labels wrong type", "POST", "/v1/evaluate", `{"labels":{},"host_labels":"env=prod"}`, `field \"host_labels\": wrong type string`},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			code, body := e.do(e.admin, tt.method, tt.path, tt.body)
			if code != 400 || !strings.Contains(body, tt.says) {
				t.Fatalf("status %d, want 400 saying %s: %s", code, tt.says, body)
			}
		})
	}
	var after map[string]any
	if e.json(e.admin, "GET", "/v1/bindings/b", nil, &after); !reflect.DeepEqual(after, before) {
		t.Fatalf("bad input changed the binding: %v -> %v", before, after)
	}
	var list []map[string]any
	if e.json(e.admin, "GET", "/v1/bindings", nil, &list); len(list) != 1 {
		t.Fatalf("bad input changed the bindings: %v", list)
	}
}

func manyLabels(n int) string {
	var parts []string
	for i := range n {
		parts = append(parts, `"k`+strings.Repeat("x", i)+`":"v"`)
	}
	return strings.Join(parts, ",")
}

// A scoped token binds only its own secrets, whatever the host selector:
// it cannot bind a secret outside its scope to "its" hosts, nor change or
// delete a binding of such a secret by narrowing or widening its hosts.
func TestScopedBindingsWhateverTheHosts(t *testing.T) {
	e := newEnv(t)
	for _, s := range []string{"payments/db", "billing/db"} {
		e.json(e.admin, "PUT", "/v1/secrets/"+s, map[string]any{"value": b64("x")}, nil)
	}
	var theirs map[string]any
	if code := e.json(e.admin, "PUT", "/v1/bindings/billing-db", map[string]any{"secret": "billing/db", "selector": "app=billing", "hosts": "env=prod"}, &theirs); code != 200 {
		t.Fatalf("setup: %d", code)
	}
	for _, role := range []authz.Role{authz.Operator, authz.Admin} {
		tok := e.token(role, "payments/*")
		tests := []struct {
			desc, method, path, body string
			want                     int
		}{
			{"bind an outside secret to some hosts", "PUT", "/v1/bindings/mine", `{"secret":"billing/db","selector":"app=pay","hosts":"team=payments"}`, 403},
			{"bind an outside secret to no host at all", "PUT", "/v1/bindings/mine", `{"secret":"billing/db","selector":"app=pay","hosts":"!env,env"}`, 403},
			{"widen the hosts of an outside binding", "PUT", "/v1/bindings/billing-db", `{"secret":"billing/db","selector":"app=billing"}`, 403},
			{"narrow the hosts of an outside binding", "PUT", "/v1/bindings/billing-db", `{"secret":"billing/db","selector":"app=billing","hosts":"env=prod,zone=eu-1"}`, 403},
			{"take over an outside binding", "PUT", "/v1/bindings/billing-db", `{"secret":"payments/db","selector":"app=billing","hosts":"env=prod"}`, 403},
			{"delete an outside binding", "DELETE", "/v1/bindings/billing-db", "", 404},
			{"bind its own secret with hosts", "PUT", "/v1/bindings/pay-db", `{"secret":"payments/db","selector":"app=pay","hosts":"env=prod"}`, 200},
			{"change its own binding's hosts", "PUT", "/v1/bindings/pay-db", `{"secret":"payments/db","selector":"app=pay","hosts":"env=dev"}`, 200},
			{"delete its own binding", "DELETE", "/v1/bindings/pay-db", "", 204},
		}
		for _, tt := range tests {
			t.Run(string(role)+"/"+tt.desc, func(t *testing.T) {
				if code, body := e.do(tok, tt.method, tt.path, tt.body); code != tt.want {
					t.Fatalf("status %d, want %d: %s", code, tt.want, body)
				}
			})
		}
	}
	var now map[string]any
	if e.json(e.admin, "GET", "/v1/bindings/billing-db", nil, &now); !reflect.DeepEqual(now, theirs) {
		t.Fatalf("outside binding changed: %v -> %v", theirs, now)
	}
	var list []map[string]any
	if e.json(e.admin, "GET", "/v1/bindings", nil, &list); len(list) != 1 {
		t.Fatalf("bindings = %v", list)
	}
}
