package policy

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
)

func TestSelectorSemantics(t *testing.T) {
	web := map[string]string{"app": "web", "env": "prod", "tier": "front"}
	db := map[string]string{"app": "db", "env": "staging"}
	dbg := map[string]string{"app": "web", "env": "dev", "debug": "true"}
	none := map[string]string{}
	tests := []struct {
		sel  string
		want map[string]bool // label set name -> matches
	}{
		{"app=web", map[string]bool{"web": true, "db": false, "dbg": true, "none": false}},
		{"app==web", map[string]bool{"web": true, "db": false, "dbg": true, "none": false}},
		{"app!=web", map[string]bool{"web": false, "db": true, "dbg": false, "none": true}},
		{"env in (prod,staging)", map[string]bool{"web": true, "db": true, "dbg": false, "none": false}},
		{"env notin (prod,staging)", map[string]bool{"web": false, "db": false, "dbg": true, "none": true}},
		{"tier", map[string]bool{"web": true, "db": false, "dbg": false, "none": false}},
		{"!debug", map[string]bool{"web": true, "db": true, "dbg": false, "none": true}},
		{"app=web,!debug", map[string]bool{"web": true, "db": false, "dbg": false, "none": false}},
		{"app=web, env in (prod), tier", map[string]bool{"web": true, "db": false, "dbg": false, "none": false}},
		{"app in (web,db),env!=dev", map[string]bool{"web": true, "db": true, "dbg": false, "none": false}},
		{"app=web,app=db", map[string]bool{"web": false, "db": false, "dbg": false, "none": false}},
		{"debug=", map[string]bool{"web": false, "db": false, "dbg": false, "none": false}},
		{"env notin (dev),!debug,app", map[string]bool{"web": true, "db": true, "dbg": false, "none": false}},
	}
	sets := map[string]map[string]string{"web": web, "db": db, "dbg": dbg, "none": none}
	for _, tt := range tests {
		t.Run(tt.sel, func(t *testing.T) {
			sel, err := ParseSelector(tt.sel)
			if err != nil {
				t.Fatalf("ParseSelector: %v", err)
			}
			for name, want := range tt.want {
				if got := sel.Matches(labels.Set(sets[name])); got != want {
					t.Errorf("%s: Matches = %v, want %v", name, got, want)
				}
				// The Set must agree with the selector.
				s, err := NewSet([]Binding{{Name: "b", Secret: "s", Selector: tt.sel}})
				if err != nil {
					t.Fatal(err)
				}
				if got := len(s.Match(Target{Labels: sets[name]})) == 1; got != want {
					t.Errorf("%s: Set.Match = %v, want %v", name, got, want)
				}
			}
		})
	}
}

func TestSelectorCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{"app=web", "app=web"},
		{"app==web", "app=web"},
		{"  app = web ", "app=web"},
		{"env in (prod)", "env=prod"},
		{"env notin (dev)", "env!=dev"},
		{"env in (staging, prod)", "env in (prod,staging)"},
		{"tier,app=web", "app=web,tier"},
		{"!debug,app=web,app=web", "app=web,!debug"},
		{"b=1,a=2,a!=3", "a!=3,a=2,b=1"},
		{"x in ()", "x="},
		{"example.com/role=db", "example.com/role=db"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			sel, err := ParseSelector(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := sel.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			b := Binding{Name: "b", Secret: "s", Selector: tt.in}
			if err := b.Normalize(); err != nil {
				t.Fatal(err)
			}
			if b.Selector != tt.want {
				t.Errorf("Normalize: Selector = %q, want %q", b.Selector, tt.want)
			}
		})
	}
}

func TestSelectorInvalid(t *testing.T) {
	tests := []struct{ in, msg string }{
		{"", "no requirement: an empty selector would match every container"},
		{"   ", "no requirement"},
		{"app=web,", "expected: identifier after ','"},
		{"app in web", "expected: '('"},
		{"app=we b", "expected: ',' or 'end of string'"},
		{"-app=web", "name part must consist of alphanumeric characters"},
		{"app=" + strings.Repeat("v", 64), "must be no more than 63 bytes"},
		{"replicas>1", "the operators '<' and '>' are not supported"},
		{"replicas<1", "the operators '<' and '>' are not supported"},
		{"app notin", "expected: '('"},
		{strings.Repeat("a=b,", 1100) + "a=b", "longer than 4096 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseSelector(tt.in)
			if err == nil {
				t.Fatal("ParseSelector: no error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not say %q", err, tt.msg)
			}
		})
	}
}
