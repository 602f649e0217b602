package etcd

import (
	"context"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"coffer/internal/etcdtest"
)

// The servers' presence records (internal/server/presence.go) hang on a
// lease: with etcd's auth on and a role limited to "<prefix>/", the
// backend's client may grant a lease, attach keys under its prefix to it,
// keep it alive and revoke it (which deletes them).
func TestLeaseWithRolePerPrefix(t *testing.T) {
	ca := etcdtest.NewCA(t, "coffer-test-ca")
	c := etcdtest.Start(t, etcdtest.Options{TLS: ca, ClientCertAuth: true})
	for _, args := range [][]string{
		{"user", "add", "root", "--no-password"},
		{"user", "grant-role", "root", "root"},
		{"user", "add", "etcdtest-client", "--no-password"},
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
	b, err := Open(context.Background(), Config{Endpoints: c.Endpoints(), Prefix: "a", CAFile: ca.CertFile, CertFile: cert.Cert, KeyFile: cert.Key})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	cli := b.Client()
	l, err := cli.Grant(ctx, 3)
	if err != nil {
		t.Fatalf("grant a lease: %v", err)
	}
	if _, err := cli.Txn(ctx).Then(clientv3.OpPut(b.Root()+"live/agents/s1/node-1", "{}", clientv3.WithLease(l.ID))).Commit(); err != nil {
		t.Fatalf("put under the lease: %v", err)
	}
	if _, err := cli.KeepAliveOnce(ctx, l.ID); err != nil {
		t.Fatalf("keep the lease alive: %v", err)
	}
	if _, err := cli.Revoke(ctx, l.ID); err != nil {
		t.Fatalf("revoke the lease: %v", err)
	}
	resp, err := cli.Get(ctx, b.Root()+"live/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("after the revocation: %v %v", resp, err)
	}
}
