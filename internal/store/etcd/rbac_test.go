package etcd

import (
	"context"
	"errors"
	"strings"
	"testing"

	"coffer/internal/etcdtest"
	"coffer/internal/store"
	"coffer/internal/store/storetest"
)

// With etcd's auth on and a role limited to "<prefix>/", the backend works:
// it never touches a key outside its prefix. The same certificate cannot
// open another installation's prefix, and says so clearly.
func TestRolePerPrefix(t *testing.T) {
	ca := etcdtest.NewCA(t, "coffer-test-ca")
	c := etcdtest.Start(t, etcdtest.Options{TLS: ca, ClientCertAuth: true})
	// With --client-cert-auth, etcd takes the user name from the
	// certificate's common name.
	for _, args := range [][]string{
		{"user", "add", "root", "--no-password"},
		{"user", "grant-role", "root", "root"},
		{"user", "add", "etcdtest-client", "--no-password"}, // the kit's etcdctl
		{"user", "grant-role", "etcdtest-client", "root"},
		{"role", "add", "coffer-a"},
		{"role", "grant-permission", "coffer-a", "--prefix=true", "readwrite", "a/"},
		{"user", "add", "coffer-a", "--no-password"},
		{"user", "grant-role", "coffer-a", "coffer-a"},
		{"auth", "enable"},
	} {
		c.Etcdctl(t, args...)
	}
	cert := ca.Issue(t, "coffer-a", false)
	cfg := func(prefix string) Config {
		return Config{Endpoints: c.Endpoints(), Prefix: prefix, CAFile: ca.CertFile, CertFile: cert.Cert, KeyFile: cert.Key}
	}
	b, err := Open(context.Background(), cfg("a"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	storetest.Run(t, b)
	if got := list(t, b, "\xff"); got != "" {
		t.Fatalf("List of a prefix past every key = %q", got)
	}
	// An Update that lists and deletes: its range guard and delete clock
	// stay inside the prefix too.
	err = b.Update(context.Background(), func(tx store.Tx) error {
		return tx.List("a/", func(k string, _ []byte) error { return tx.Delete(k) })
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := list(t, b, "a/"); got != "" {
		t.Fatalf("after deleting all: %q", got)
	}

	_, err = Open(context.Background(), cfg("ab"))
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), `"ab/"`) {
		t.Fatalf("Open of another prefix = %v, want ErrDenied naming it", err)
	}
	t.Logf("error: %v", err)
}
