package api_test

import (
	"reflect"
	"strings"
	"testing"
)

// A binding's rotation contract: canonical in the answer, and bad
// contracts are a 400 naming the binding and the field that change
// nothing.
func TestBindingRotation(t *testing.T) {
	e := newEnv(t)
	e.json(e.admin, "PUT", "/v1/secrets/web/key", map[string]any{"value": b64("x")}, nil)
	var before map[string]any
	if code := e.json(e.admin, "PUT", "/v1/bindings/b", map[string]any{"secret": "web/key", "selector": "app=web", "rotation": "signal:hup"}, &before); code != 200 {
		t.Fatalf("setup: %d", code)
	}
	if before["rotation"] != "signal:SIGHUP" {
		t.Fatalf("rotation %v, want the canonical signal:SIGHUP", before["rotation"])
	}
	for _, tt := range []struct{ desc, body, says string }{
		{"kill", `{"secret":"web/key","selector":"app=web","rotation":"signal:SIGKILL"}`, `\"b\": rotation \"signal:SIGKILL\": SIGKILL kills the process`},
		{"term", `{"secret":"web/key","selector":"app=web","rotation":"signal:TERM"}`, "use restart-process to restart it"},
		{"unknown signal", `{"secret":"web/key","selector":"app=web","rotation":"signal:SIGFOO"}`, `unknown signal \"SIGFOO\"`},
		{"unknown contract", `{"secret":"web/key","selector":"app=web","rotation":"restart"}`, `rotation \"restart\": want file, signal:\u003cNAME\u003e`},
		{"wrong type", `{"secret":"web/key","selector":"app=web","rotation":1}`, `field \"rotation\": wrong type number`},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			code, body := e.do(e.admin, "PUT", "/v1/bindings/b", tt.body)
			if code != 400 || !strings.Contains(body, tt.says) {
				t.Fatalf("status %d, want 400 saying %s: %s", code, tt.says, body)
			}
		})
	}
	var after map[string]any
	if e.json(e.admin, "GET", "/v1/bindings/b", nil, &after); !reflect.DeepEqual(after, before) {
		t.Fatalf("bad input changed the binding: %v -> %v", before, after)
	}
	var plain map[string]any
	e.json(e.admin, "PUT", "/v1/bindings/c", map[string]any{"secret": "web/key", "selector": "app=x", "rotation": "file"}, &plain)
	if _, ok := plain["rotation"]; ok {
		t.Fatalf("the default is absent from answers: %v", plain)
	}
}
