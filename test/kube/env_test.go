package kube

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"coffer/internal/containerdtest"
	"coffer/internal/kubetest"
	"coffer/test/testkit"
)

func TestMain(m *testing.M) {
	code := m.Run()
	containerdtest.StopShared() // the kubelet's containerd
	os.Exit(code)
}

// SecretFile is where pods find the test's secret.
const SecretFile = "/run/coffer/db-password"

// env is one Kubernetes node: API server, kubelet, containerd, and Coffer's
// server and agent.
type env struct {
	t     testing.TB // the current (sub)test
	root  testing.TB // the one that owns the processes
	dir   string
	node  string
	c     *kubetest.Cluster
	cs    *kubernetes.Clientset
	k     *kubetest.Kubelet
	d     *containerdtest.Daemon
	srv   *testkit.Server
	agent *testkit.Proc
	hc    *http.Client // putSecret's
}

// newEnv starts a node and Coffer on it; the agent is enrolled with a join
// token carrying the node's name as its k8s.node label, as an admin
// enrolls a node's agent.
func newEnv(t testing.TB) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end with a real kubelet")
	}
	// Before TMPDIR moves: the daemon outlives this test (TestMain stops it).
	d := containerdtest.Shared(t, containerdtest.V2)
	e := &env{t: t, root: t, d: d, node: kubetest.NodeName(t)}
	e.c = kubetest.Start(t, kubetest.Options{Users: []kubetest.User{kubetest.NodeUser(e.node), {Name: serverUser}}})
	e.cs = e.c.Client()
	// coffer-server confirms every pod with the API server (--kubeconfig),
	// with the RBAC the manifests give it.
	e.c.Allow(e.ctx(), serverUser, []string{"pods"}, []string{"get", "list", "watch"})
	waitAllowed(t, e.c, serverUser)
	// NRI's validator: a pod that requires the coffer plugin does not
	// start while the agent is down.
	e.k = e.c.StartKubelet(t, kubetest.KubeletOptions{Node: e.node, Containerd: d, NRIValidator: true})
	e.dir = t.TempDir()
	// The server's, the agent's and the CLI's temporary files go into the
	// test's dir, which the disk checks search.
	tmp := filepath.Join(e.dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", tmp)
	e.srv = testkit.StartServer(t, filepath.Join(e.dir, "server"), "--kubeconfig", e.c.Kubeconfig(serverUser))
	join := strings.TrimSpace(e.srv.MustCLI(t, "", "token", "create", "--role", "agent", "--ttl", "10m",
		"--agent-labels", "k8s.node="+e.node))
	// As the DaemonSet passes it.
	t.Setenv("COFFER_JOIN_TOKEN", join)
	e.startAgent()
	ctx := e.ctx()
	for _, ns := range []string{"shop", "other"} {
		e.c.EnsureNamespace(ctx, ns)
	}
	return e
}

// serverUser is coffer-server's identity at the API server.
const serverUser = "coffer-server"

// waitAllowed waits until RBAC lets user list pods (the authorizer learns
// of new bindings through its own watch): coffer-server checks it at start.
func waitAllowed(t testing.TB, c *kubetest.Cluster, user string) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.Config(user))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cs.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{Limit: 1})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s may not list pods: %v", user, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (e *env) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	e.t.Cleanup(cancel)
	return ctx
}

// startAgent runs coffer-agent beside the kubelet with the DaemonSet's
// flags (deploy/kubernetes/coffer-agent.yaml), the sockets and addresses
// being this node's, and waits until it is connected.
func (e *env) startAgent() {
	e.t.Helper()
	e.agent = testkit.Start(e.root, testkit.Bin(e.t, "coffer-agent"),
		"--runtime=containerd",
		"--containerd-socket="+e.d.Socket,
		"--nri-socket="+e.d.NRISocket,
		"--node-name="+e.node,
		"--name="+e.node,
		"--server="+e.srv.Addr,
		"--ca-cert="+e.srv.CA,
		"--state-dir="+filepath.Join(e.dir, "agent"),
	)
	e.eventually("agent connected and its NRI plugin registered", 60*time.Second, func() bool {
		return strings.Contains(e.srv.MustCLI(e.t, "", "agent", "ls"), "connected") &&
			strings.Count(e.agent.Logs(), "NRI plugin registered") > 0
	})
}

// servedContainers is how many containers the agent reports.
func (e *env) servedContainers() int {
	e.t.Helper()
	var as []struct {
		Containers int `json:"containers"`
	}
	if err := json.Unmarshal([]byte(e.srv.MustCLI(e.t, "", "agent", "ls", "-o", "json")), &as); err != nil || len(as) != 1 {
		e.t.Fatalf("agent ls: %v (%d agents)", err, len(as))
	}
	return as[0].Containers
}

// podRefusals is the number of pods the server refused to the node's
// agent because the API server does not have them on this node.
func (e *env) podRefusals() int {
	e.t.Helper()
	var as []struct {
		PodRefusals int `json:"pod_refusals"`
	}
	if err := json.Unmarshal([]byte(e.srv.MustCLI(e.t, "", "agent", "ls", "-o", "json")), &as); err != nil || len(as) != 1 {
		e.t.Fatalf("agent ls: %v (%d agents)", err, len(as))
	}
	return as[0].PodRefusals
}

func (e *env) eventually(what string, d time.Duration, f func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s\nagent:\n%s\nkubelet:\n%s", what, tail(e.agent.Logs()), tail(e.k.Tail()))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// firstInstruction is a pod's shell script whose first instruction reads
// the secret file: it prints PRESENT and the file's SHA-256 (not the value:
// the log is on the host's disk), or MISSING.
const firstInstruction = `if test -s ` + SecretFile + `; then echo PRESENT $(busybox sha256sum < ` + SecretFile + `); else echo MISSING; fi; ` +
	`test -s /var/run/secrets/kubernetes.io/serviceaccount/token && echo TOKEN; `

// present is what firstInstruction prints for value.
func present(value string) string {
	h := sha256.Sum256([]byte(value))
	return "PRESENT " + hex.EncodeToString(h[:])
}

// podOpts describes a pod.
type podOpts struct {
	ns, name    string
	labels, ann map[string]string
	restart     corev1.RestartPolicy // default Always (a Deployment's)
	script      string               // default firstInstruction, then sleep
}

// createPod creates a pod bound to the node (there is no scheduler) with
// one container "app" running the local app image, never pulled.
func (e *env) createPod(o podOpts) *corev1.Pod {
	e.t.Helper()
	p, err := e.cs.CoreV1().Pods(o.ns).Create(e.ctx(), e.pod(o), metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("create pod %s/%s: %v", o.ns, o.name, err)
	}
	return p
}

// pod is the object createPod creates.
func (e *env) pod(o podOpts) *corev1.Pod {
	if o.restart == "" {
		o.restart = corev1.RestartPolicyAlways
	}
	if o.script == "" {
		o.script = firstInstruction + "exec sleep 3600"
	}
	grace := int64(0)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: o.name, Namespace: o.ns, Labels: o.labels, Annotations: o.ann},
		Spec: corev1.PodSpec{
			NodeName:                      e.node,
			RestartPolicy:                 o.restart,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "app", Image: containerdtest.AppImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", o.script},
			}},
		},
	}
	return p
}

func (e *env) getPod(ns, name string) *corev1.Pod {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := e.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatalf("get pod %s/%s: %v", ns, name, err)
	}
	return p
}

// waitPod waits until cond holds for pod ns/name.
func (e *env) waitPod(ns, name, what string, d time.Duration, cond func(*corev1.Pod) bool) *corev1.Pod {
	e.t.Helper()
	var p *corev1.Pod
	deadline := time.Now().Add(d)
	for {
		p = e.getPod(ns, name)
		if cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("pod %s/%s: timed out waiting for %s; phase %s, containers %+v\nagent:\n%s\nkubelet:\n%s",
				ns, name, what, p.Status.Phase, p.Status.ContainerStatuses, tail(e.agent.Logs()), tail(e.k.Tail()))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func running(p *corev1.Pod) bool {
	return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil
}

// containerID is the CRI id of the pod's container.
func containerID(p *corev1.Pod) string {
	if len(p.Status.ContainerStatuses) == 0 {
		return ""
	}
	return strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "containerd://")
}

// output is what the pod's container (its current restart) wrote, once its
// first line is there.
func (e *env) output(p *corev1.Pod) string {
	e.t.Helper()
	attempt := 0
	if len(p.Status.ContainerStatuses) == 1 {
		attempt = int(p.Status.ContainerStatuses[0].RestartCount)
	}
	var out string
	e.eventually("the first instruction's output of "+p.Name, 60*time.Second, func() bool {
		out = e.k.PodLog(p.Namespace, p.Name, string(p.UID), "app", attempt)
		return strings.Contains(out, "PRESENT") || strings.Contains(out, "MISSING")
	})
	return out
}

// read reads the secret file in the pod's container through the CRI.
func (e *env) read(p *corev1.Pod) (string, bool) {
	e.t.Helper()
	out, err := e.d.Exec(e.t, containerID(p), "cat", SecretFile)
	return out, err == nil
}

func (e *env) deletePod(ns, name string) {
	grace := int64(0)
	_ = e.cs.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
}

func randID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}

// grepTree lists the regular files under root that contain needle.
func grepTree(root, needle string) []string {
	var hits []string
	_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		if !fi.Mode().IsRegular() || fi.Size() > 64<<20 {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), needle) {
			hits = append(hits, p)
		}
		return nil
	})
	return hits
}

// pidOf is the host pid of the process whose command line holds every one
// of args (a testkit.Proc does not export its pid).
func pidOf(args ...string) int {
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + ent.Name() + "/cmdline")
		if err != nil {
			continue
		}
		ok := true
		for _, a := range args {
			ok = ok && strings.Contains(string(b), a)
		}
		if ok {
			return pid
		}
	}
	return 0
}

// rssKiB is a process's resident set size.
func rssKiB(pid int) (int, error) { return statusKiB(pid, "VmRSS:") }

// statusKiB is a "<field> N kB" line of a process's status.
func statusKiB(pid int, field string) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("no %s for %d", field, pid)
}

// childrenRSSKiB is the RSS of a process's children (the agent's helpers).
func childrenRSSKiB(pid int) int {
	total := 0
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		c, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if ppid, err := statusKiB(c, "PPid:"); err == nil && ppid == pid {
			if kb, err := rssKiB(c); err == nil {
				total += kb
			}
		}
	}
	return total
}
