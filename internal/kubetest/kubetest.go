// Package kubetest starts a real Kubernetes API server for tests: etcd (from
// internal/etcdtest) and kube-apiserver v1.34 on free 127.0.0.1 ports in a
// temporary directory, with static bearer tokens for the users a test
// needs, a ServiceAccount signing key, and Node+RBAC authorization, as a
// real cluster has.
//
// There is no scheduler and no controller manager: a test sets
// spec.nodeName on its pods and creates the ServiceAccounts its pods use
// (EnsureNamespace creates the namespace, its "default" ServiceAccount and
// the kube-root-ca.crt ConfigMap). Pods stay Pending: no kubelet runs them.
//
// The binaries come from internal/testtools (scripts/test-tools.sh kube
// builds them): without them Start skips the test, or fails it under
// COFFER_REQUIRE_TOOLS=1.
package kubetest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"coffer/internal/etcdtest"
	"coffer/internal/testtools"
)

// StartTimeout bounds how long Start waits for the API server to be ready.
// It is generous: the machine may be busy, and the first start bootstraps
// every built-in RBAC role.
const StartTimeout = 120 * time.Second

// Issuer is the ServiceAccount token issuer of every test cluster.
const Issuer = "https://kubernetes.default.svc.cluster.local"

// User is a static-token user of the API server.
type User struct {
	Name   string
	Groups []string
}

// Options configures a cluster.
type Options struct {
	// Users are given bearer tokens besides the admin (Cluster.Token).
	Users []User
}

// Cluster is a running API server with its etcd.
type Cluster struct {
	t    testing.TB
	Dir  string
	URL  string // https://127.0.0.1:port
	CA   string // PEM file of the CA that signed the API server's certificate
	Etcd *etcdtest.Cluster
	// SigningKey is the PEM file of the ServiceAccount token signing key;
	// SigningPub its public key.
	SigningKey, SigningPub string

	tokens map[string]string // user → bearer token
	cmd    *exec.Cmd
	done   chan struct{}
	log    string
	once   sync.Once
}

// AdminUser is the user of Cluster.Client and Kubeconfig(AdminUser):
// member of system:masters.
const AdminUser = "kubetest-admin"

// Start starts etcd and kube-apiserver, waits until the API server is
// ready, and registers a cleanup that stops both.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	bin := testtools.Path(t, testtools.KubeAPIServer)
	e := etcdtest.Start(t, etcdtest.Options{})
	dir := t.TempDir()
	c := &Cluster{t: t, Dir: dir, Etcd: e, tokens: map[string]string{}, done: make(chan struct{})}

	ca := etcdtest.NewCA(t, "kubetest-ca")
	serving := ca.Issue(t, "kube-apiserver", true)
	c.CA = ca.CertFile
	c.SigningKey, c.SigningPub = writeSigningKey(t, dir)

	var tokens strings.Builder
	users := append([]User{{Name: AdminUser, Groups: []string{"system:masters"}}}, o.Users...)
	for i, u := range users {
		tok := randHex(t, 16)
		c.tokens[u.Name] = tok
		fmt.Fprintf(&tokens, "%s,%s,%d,%q\n", tok, u.Name, 1000+i, strings.Join(u.Groups, ","))
	}
	tokFile := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokFile, []byte(tokens.String()), 0o600); err != nil {
		t.Fatal(err)
	}

	port := freePort(t)
	c.URL = "https://127.0.0.1:" + strconv.Itoa(port)
	c.log = filepath.Join(dir, "kube-apiserver.log")
	logf, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := []string{
		"--etcd-servers=" + strings.Join(e.Endpoints(), ","),
		"--etcd-prefix=/kubetest",
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + serving.Cert, "--tls-private-key-file=" + serving.Key,
		"--client-ca-file=" + ca.CertFile,
		"--token-auth-file=" + tokFile,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=" + Issuer,
		"--service-account-key-file=" + c.SigningPub,
		"--service-account-signing-key-file=" + c.SigningKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--endpoint-reconciler-type=none",
		"--kubelet-preferred-address-types=Hostname",
		"--profiling=false",
		"--enable-priority-and-fairness=false",
		"--cert-dir=" + filepath.Join(dir, "pki"),
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("kubetest: start kube-apiserver: %v", err)
	}
	c.cmd = cmd
	go func() { _ = cmd.Wait(); close(c.done) }()
	t.Cleanup(c.Stop)
	if err := c.waitReady(); err != nil {
		t.Fatalf("kubetest: %v\n%s", err, c.Tail())
	}
	return c
}

// Stop stops the API server (etcd stops with the test).
func (c *Cluster) Stop() {
	c.once.Do(func() {
		if c.cmd == nil || c.cmd.Process == nil {
			return
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
}

// Tail is the end of the API server's log, for a failing test's message.
func (c *Cluster) Tail() string {
	b, _ := os.ReadFile(c.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Token is the bearer token of a user given in Options.Users, or of
// AdminUser.
func (c *Cluster) Token(user string) string {
	tok, ok := c.tokens[user]
	if !ok {
		c.t.Fatalf("kubetest: no user %q", user)
	}
	return tok
}

// Config is a client configuration for user.
func (c *Cluster) Config(user string) *rest.Config {
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     c.Token(user),
		TLSClientConfig: rest.TLSClientConfig{CAFile: c.CA},
		QPS:             100, Burst: 200,
	}
}

// Client is a clientset for the admin.
func (c *Cluster) Client() *kubernetes.Clientset {
	cs, err := kubernetes.NewForConfig(c.Config(AdminUser))
	if err != nil {
		c.t.Fatal(err)
	}
	return cs
}

// Kubeconfig writes a kubeconfig file for user and returns its path.
func (c *Cluster) Kubeconfig(user string) string {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["kubetest"] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthority: c.CA}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: c.Token(user)}
	kc.Contexts["kubetest"] = &clientcmdapi.Context{Cluster: "kubetest", AuthInfo: user}
	kc.CurrentContext = "kubetest"
	p := filepath.Join(c.Dir, "kubeconfig-"+user)
	if err := clientcmd.WriteToFile(*kc, p); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// EnsureNamespace creates namespace ns (if missing) with what the missing
// controllers would create in it: the "default" ServiceAccount and the
// kube-root-ca.crt ConfigMap (without it no projected token mounts).
func (c *Cluster) EnsureNamespace(ctx context.Context, ns string) {
	c.t.Helper()
	cs := c.Client()
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		c.t.Fatalf("kubetest: namespace %s: %v", ns, err)
	}
	c.EnsureServiceAccount(ctx, ns, "default")
	ca, err := os.ReadFile(c.CA)
	if err != nil {
		c.t.Fatal(err)
	}
	_, err = cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt"},
		Data:       map[string]string{"ca.crt": string(ca)},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		c.t.Fatalf("kubetest: kube-root-ca.crt in %s: %v", ns, err)
	}
}

// EnsureServiceAccount creates ServiceAccount ns/name if it is missing.
func (c *Cluster) EnsureServiceAccount(ctx context.Context, ns, name string) {
	c.t.Helper()
	_, err := c.Client().CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		c.t.Fatalf("kubetest: serviceaccount %s/%s: %v", ns, name, err)
	}
}

// Allow gives user (or group, when the name starts with "group:") the
// verbs on the resources of the core API group, cluster-wide, as an admin
// would with a ClusterRole and its binding.
func (c *Cluster) Allow(ctx context.Context, user string, resources, verbs []string) {
	c.t.Helper()
	cs := c.Client()
	name := "kubetest-" + strings.NewReplacer(":", "-", "/", "-").Replace(user) + "-" + randHex(c.t, 4)
	_, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: resources, Verbs: verbs}},
	}, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatalf("kubetest: clusterrole: %v", err)
	}
	subject := rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}
	if g, ok := strings.CutPrefix(user, "group:"); ok {
		subject = rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: g}
	}
	_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{subject},
	}, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatalf("kubetest: clusterrolebinding: %v", err)
	}
}

func (c *Cluster) waitReady() error {
	tr := &http.Transport{TLSClientConfig: mustTLS(c)}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	deadline := time.Now().Add(StartTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			return errors.New("kube-apiserver exited")
		default:
		}
		req, _ := http.NewRequest(http.MethodGet, c.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+c.Token(AdminUser))
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/readyz: %s", resp.Status)
		}
		last = err
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready after %s: %v", StartTimeout, last)
}

func mustTLS(c *Cluster) *tls.Config {
	pemCA, err := os.ReadFile(c.CA)
	if err != nil {
		c.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemCA) {
		c.t.Fatal("kubetest: bad CA file")
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

func writeSigningKey(t testing.TB, dir string) (keyFile, pubFile string) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	pder, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	keyFile, pubFile = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pder}), 0o644); err != nil {
		t.Fatal(err)
	}
	return keyFile, pubFile
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func randHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
