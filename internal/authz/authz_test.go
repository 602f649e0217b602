package authz

import (
	"errors"
	"testing"
)

func TestAuthorize(t *testing.T) {
	tests := []struct {
		desc   string
		p      Principal
		a      Action
		object string
		ok     bool
	}{
		{"admin tokens", Principal{Role: Admin}, TokenManage, "", true},
		{"operator writes secrets", Principal{Role: Operator}, SecretWrite, "a/b", true},
		{"operator no tokens", Principal{Role: Operator}, TokenManage, "", false},
		{"operator no audit", Principal{Role: Operator}, AuditRead, "", false},
		{"auditor reads audit", Principal{Role: Auditor}, AuditRead, "", true},
		{"auditor cannot write", Principal{Role: Auditor}, SecretWrite, "a", false},
		{"viewer reads meta", Principal{Role: Viewer}, SecretRead, "x", true},
		{"viewer cannot bind", Principal{Role: Viewer}, BindingWrite, "x", false},
		{"agent join token can do nothing", Principal{Role: Agent}, SecretRead, "", false},
		{"scope inside", Principal{Role: Operator, Scope: "payments/"}, SecretWrite, "payments/db", true},
		{"scope outside", Principal{Role: Operator, Scope: "payments/"}, SecretWrite, "paymentsx/db", false},
		{"unknown role", Principal{Role: "root"}, SecretRead, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			err := Authorize(tt.p, tt.a, tt.object)
			if (err == nil) != tt.ok {
				t.Fatalf("Authorize = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrDenied) {
				t.Fatalf("error %v is not ErrDenied", err)
			}
		})
	}
}

func TestNormalizeScope(t *testing.T) {
	for in, want := range map[string]string{"": "", "*": "", "payments/*": "payments/", "payments": "payments/", "a/b/": "a/b/"} {
		if got := NormalizeScope(in); got != want {
			t.Errorf("NormalizeScope(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseRole(t *testing.T) {
	if _, err := ParseRole("operator"); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseRole("superuser"); err == nil {
		t.Fatal("superuser accepted")
	}
}

func TestScopeWithin(t *testing.T) {
	tests := []struct {
		principal, scope string
		want             bool
	}{
		{"", "", true},
		{"", "payments/", true},
		{"payments/", "payments/", true},
		{"payments/", "payments/eu/", true},
		{"payments/", "", false}, // unscoped: outside every scope
		{"payments/", "paymentsx/", false},
		{"payments/", "pay/", false},
		{"payments/eu/", "payments/", false},
	}
	for _, tt := range tests {
		if got := ScopeWithin(Principal{Role: Admin, Scope: tt.principal}, tt.scope); got != tt.want {
			t.Errorf("ScopeWithin(%q, %q) = %v, want %v", tt.principal, tt.scope, got, tt.want)
		}
	}
}
