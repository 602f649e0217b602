package kubetest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"coffer/internal/containerdtest"
	"coffer/internal/testtools"
)

// NodeReadyTimeout bounds how long StartKubelet waits for its node to be
// Ready.
const NodeReadyTimeout = 120 * time.Second

// NodeUser is the static-token user a kubelet of node runs as (the Node
// authorizer's system:node:<node> in group system:nodes): pass it in
// Options.Users to Start before StartKubelet.
func NodeUser(node string) User {
	return User{Name: "system:node:" + node, Groups: []string{"system:nodes"}}
}

// NodeName makes a node name (a DNS label) from a test's name.
func NodeName(t testing.TB) string {
	n := strings.ToLower(regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "-"))
	n = strings.Trim(n, "-")
	if len(n) > 40 {
		n = strings.Trim(n[:40], "-")
	}
	return n + "-" + randHex(t, 3)
}

// KubeletOptions configures StartKubelet.
type KubeletOptions struct {
	// Node is the node's name (default NodeName(t)); the cluster must have
	// been started with NodeUser(Node) among its users.
	Node string
	// Containerd is the node's runtime: a containerdtest V2 daemon (NRI
	// on), used by this kubelet alone. StartKubelet gives it a placeholder
	// CNI (each pod gets its own network namespace with only lo, and pod IP
	// 127.0.0.1: nothing can leave the machine) and removes every pod
	// sandbox in it when the kubelet stops.
	Containerd *containerdtest.Daemon
	// NRIValidator restarts the daemon with NRI's default validator
	// enabled, so that a pod annotated
	// required-plugins.noderesource.dev/pod: '["coffer"]' is refused while
	// the plugin is absent (once per daemon: it stays on).
	NRIValidator bool
	// MaxPods is the kubelet's maxPods (default 110, the kubelet's own).
	MaxPods int
}

// Kubelet is a running kubelet v1.34 registered as a node of the cluster.
type Kubelet struct {
	Node       string
	RootDir    string // --root-dir: pods' volumes, plugins, checkpoints
	PodLogsDir string // podLogsDir: <ns>_<pod>_<uid>/<container>/<restart>.log
	Containerd *containerdtest.Daemon

	t    testing.TB
	c    *Cluster
	dir  string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	once sync.Once
}

// The host paths a kubelet writes whatever its root directory: its device
// plugin socket and its symlinks to the containers' logs.
const (
	devicePluginDir = "/var/lib/kubelet/device-plugins"
	containerLogDir = "/var/log/containers"
)

// kernelTunables are what the kubelet's container manager sets at start
// (pkg/kubelet/cm/container_manager_linux.go setupKernelTunables) unless
// protectKernelDefaults, which would refuse to start on a host that has
// other values: StartKubelet lets it set them and restores them at stop.
var kernelTunables = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

var kubeletMu sync.Mutex // one kubelet starts (and changes the host) at a time

// StartKubelet starts a real kubelet (testtools.Kubelet) for node o.Node
// against the cluster and o.Containerd, on loopback only (its API server
// is off: nothing listens), waits until the node is Ready, and registers a
// cleanup that stops it, removes its pods from the runtime, unmounts what
// it mounted, removes what it wrote outside its temporary directory and
// restores the kernel settings it changed.
//
// There is no scheduler: create pods with spec.nodeName = k.Node.
func (c *Cluster) StartKubelet(t testing.TB, o KubeletOptions) *Kubelet {
	t.Helper()
	bin := testtools.Path(t, testtools.Kubelet)
	if o.Containerd == nil || o.Containerd.Kind != containerdtest.V2 {
		t.Fatal("kubetest: StartKubelet needs a containerdtest V2 daemon")
	}
	if o.Node == "" {
		o.Node = NodeName(t)
	}
	if o.MaxPods == 0 {
		o.MaxPods = 110
	}
	user := NodeUser(o.Node).Name
	if _, ok := c.tokens[user]; !ok {
		t.Fatalf("kubetest: start the cluster with kubetest.NodeUser(%q) among its users", o.Node)
	}
	d := o.Containerd
	if err := configure(d, o.NRIValidator); err != nil {
		t.Fatalf("kubetest: configure %s: %v", d.Kind, err)
	}

	dir := t.TempDir()
	k := &Kubelet{
		Node: o.Node, RootDir: filepath.Join(dir, "root"), PodLogsDir: filepath.Join(dir, "pod-logs"),
		Containerd: d, t: t, c: c, dir: dir, log: filepath.Join(dir, "kubelet.log"), done: make(chan struct{}),
	}
	for _, p := range []string{k.RootDir, k.PodLogsDir, filepath.Join(dir, "pki")} {
		if err := os.MkdirAll(p, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "kubelet-config.yaml")
	if err := os.WriteFile(cfg, []byte(k.config(o)), 0o600); err != nil {
		t.Fatal(err)
	}

	kubeletMu.Lock()
	defer kubeletMu.Unlock()
	k.noteHost()
	t.Cleanup(k.Stop)
	logf, err := os.Create(k.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin,
		"--config="+cfg,
		"--kubeconfig="+c.Kubeconfig(user),
		"--root-dir="+k.RootDir,
		"--cert-dir="+filepath.Join(dir, "pki"),
		"--hostname-override="+o.Node,
		"--v=1",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("kubetest: start kubelet: %v", err)
	}
	k.cmd = cmd
	go func() { _ = cmd.Wait(); close(k.done) }()
	if err := k.waitReady(); err != nil {
		t.Fatalf("kubetest: %v\n%s", err, k.Tail())
	}
	return k
}

// config is the KubeletConfiguration this machine needs (the research's,
// docs in ../shared/research/k8s-feasibility.md §2): cgroupfs on cgroup
// v1, no QoS cgroups, no swap check, no iptables chains, no eviction, no
// image GC, and no kubelet API server (no port at all; `kubectl logs` and
// exec do not work, the pod logs are read from PodLogsDir).
func (k *Kubelet) config(o KubeletOptions) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
enableServer: false
address: 127.0.0.1
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
failCgroupV1: false
makeIPTablesUtilChains: false
containerRuntimeEndpoint: unix://%[1]s
imageServiceEndpoint: unix://%[1]s
podLogsDir: %[2]s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {}
maxPods: %[3]d
serializeImagePulls: false
syncFrequency: 10s
nodeStatusUpdateFrequency: 2s
resolvConf: /etc/resolv.conf
`, o.Containerd.Socket, k.PodLogsDir, o.MaxPods)
}

const cniConf = "10-coffer-placeholder.conflist"

// placeholderCNI writes a CNI plugin and configuration into the daemon's
// CNI directory (bin_dir = conf_dir = <Dir>/cni in containerdtest's
// config): ADD names eth0 with 127.0.0.1/8 in the pod's own network
// namespace, where only lo exists; the CRI reports the network ready once
// it sees a configuration, and the kubelet the node Ready.
func placeholderCNI(d *containerdtest.Daemon) error {
	cni := filepath.Join(d.Dir, "cni")
	if err := os.MkdirAll(cni, 0o755); err != nil {
		return err
	}
	// containerd's CRI runs "loopback" for lo, then the configured
	// network for eth0.
	for name, ifc := range map[string]string{"coffer-placeholder": "eth0", "loopback": "lo"} {
		plugin := `#!/bin/sh
# Placeholder CNI plugin for Coffer's tests: the pod keeps its own network
# namespace with only lo; nothing is created, nothing leaves the machine.
case "$CNI_COMMAND" in
ADD) cat >/dev/null
     printf '{"cniVersion":"1.0.0","interfaces":[{"name":"` + ifc + `","sandbox":"%s"}],"ips":[{"address":"127.0.0.1/8","interface":0}]}' "$CNI_NETNS" ;;
VERSION) printf '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
*) cat >/dev/null ;;
esac
`
		if err := os.WriteFile(filepath.Join(cni, name), []byte(plugin), 0o755); err != nil {
			return err
		}
	}
	conf := `{"cniVersion":"1.0.0","name":"coffer-test-net","plugins":[{"type":"coffer-placeholder"}]}`
	return os.WriteFile(filepath.Join(cni, cniConf), []byte(conf), 0o644)
}

// configure gives the daemon the placeholder CNI and, with validator,
// NRI's default validator (appended to <Dir>/config.toml), restarting it
// when it does not have them yet: its CRI reads the CNI directory at start.
func configure(d *containerdtest.Daemon, validator bool) error {
	p := filepath.Join(d.Dir, "config.toml")
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	restart := false
	const section = `[plugins."io.containerd.nri.v1.nri".default_validator]`
	if validator && !strings.Contains(string(b), section) {
		b = append(b, "\n"+section+"\n  enable = true\n"...)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return err
		}
		restart = true
	}
	if _, err := os.Stat(filepath.Join(d.Dir, "cni", cniConf)); err != nil {
		if err := placeholderCNI(d); err != nil {
			return err
		}
		restart = true
	}
	if !restart {
		return nil
	}
	if err := d.Stop(); err != nil {
		return err
	}
	return d.Start()
}

// hostState is where the first kubelet on the machine records the host
// as it was (kernel settings, paths that did not exist), for the last one
// to put back: test processes may run kubelets at the same time.
var hostState = "/tmp/coffer-kubetest-host.json"

type hostRecord struct {
	Sysctl  map[string]string `json:"sysctl"`
	Missing []string          `json:"missing"`
}

// noteHost records what the kubelet is going to change outside its
// directory, unless a running kubelet's record is there already.
func (k *Kubelet) noteHost() {
	if _, err := os.Stat(hostState); err == nil && otherKubelets(nil) {
		return
	}
	r := hostRecord{Sysctl: map[string]string{}}
	for _, s := range kernelTunables {
		if b, err := os.ReadFile("/proc/sys/" + s); err == nil {
			r.Sysctl[s] = strings.TrimSpace(string(b))
		}
	}
	for _, p := range []string{"/var/lib/kubelet", devicePluginDir, containerLogDir} {
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			r.Missing = append(r.Missing, p)
		}
	}
	b, _ := json.Marshal(r)
	if err := os.WriteFile(hostState, b, 0o600); err != nil {
		k.t.Logf("kubetest: record the host's state: %v", err)
	}
}

// restoreHost puts back what hostState recorded, if no other kubelet runs.
func (k *Kubelet) restoreHost() {
	if otherKubelets(k.cmd) {
		return
	}
	b, err := os.ReadFile(hostState)
	if err != nil {
		return
	}
	var r hostRecord
	if err := json.Unmarshal(b, &r); err != nil {
		k.t.Logf("kubetest: %s: %v", hostState, err)
		return
	}
	for _, p := range slices.Backward(r.Missing) {
		_ = os.RemoveAll(p)
	}
	for s, v := range r.Sysctl {
		if b, err := os.ReadFile("/proc/sys/" + s); err == nil && strings.TrimSpace(string(b)) != v {
			if err := os.WriteFile("/proc/sys/"+s, []byte(v), 0o644); err != nil {
				k.t.Logf("kubetest: restore %s=%s: %v", s, v, err)
			}
		}
	}
	_ = os.Remove(hostState)
}

// Tail is the end of the kubelet's log.
func (k *Kubelet) Tail() string {
	b, _ := os.ReadFile(k.log)
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// Log is the kubelet's whole log.
func (k *Kubelet) Log() string {
	b, _ := os.ReadFile(k.log)
	return string(b)
}

// Running reports whether the kubelet process is still running.
func (k *Kubelet) Running() bool {
	select {
	case <-k.done:
		return false
	default:
		return true
	}
}

func (k *Kubelet) waitReady() error {
	ctx, cancel := context.WithTimeout(context.Background(), NodeReadyTimeout)
	defer cancel()
	cs := k.c.Client()
	var last string
	for {
		if !k.Running() {
			return fmt.Errorf("kubelet exited")
		}
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		n, err := cs.CoreV1().Nodes().Get(rctx, k.Node, metav1.GetOptions{})
		rcancel()
		if err == nil {
			last = "not Ready"
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					if c.Status == corev1.ConditionTrue {
						return nil
					}
					last = fmt.Sprintf("Ready=%s: %s", c.Status, c.Message)
				}
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s not Ready after %s: %s", k.Node, NodeReadyTimeout, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Stop stops the kubelet, removes every pod sandbox from its runtime,
// unmounts everything under its directory, removes what it wrote outside
// it (only what did not exist before: /var/lib/kubelet/device-plugins,
// /var/log/containers, or else the links it made there into this
// kubelet's logs) and restores the kernel settings it changed.
func (k *Kubelet) Stop() {
	k.once.Do(func() {
		kubeletMu.Lock()
		defer kubeletMu.Unlock()
		if k.cmd != nil && k.cmd.Process != nil {
			_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-k.done:
			case <-time.After(15 * time.Second):
				_ = syscall.Kill(-k.cmd.Process.Pid, syscall.SIGKILL)
				<-k.done
			}
		}
		k.removePods()
		unmountAll(k.dir)
		// The links the kubelet made to its containers' logs.
		if ents, err := os.ReadDir(containerLogDir); err == nil {
			for _, e := range ents {
				p := filepath.Join(containerLogDir, e.Name())
				if dst, err := os.Readlink(p); err == nil && strings.HasPrefix(dst, k.PodLogsDir+"/") {
					_ = os.Remove(p)
				}
			}
		}
		k.restoreHost()
	})
}

// otherKubelets reports whether a kubelet other than self runs.
func otherKubelets(self *exec.Cmd) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || (self != nil && self.Process != nil && pid == self.Process.Pid) {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/comm"); err == nil && strings.TrimSpace(string(b)) == "kubelet" {
			return true
		}
	}
	return false
}

// removePods removes every pod sandbox (and so its containers) from the
// kubelet's runtime.
func (k *Kubelet) removePods() {
	if k.Containerd == nil || k.Containerd.CRI == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := k.Containerd.CRI.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		k.t.Logf("kubetest: list pods to remove: %v", err)
		return
	}
	for _, sb := range resp.GetItems() {
		_, _ = k.Containerd.CRI.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.GetId()})
		if _, err := k.Containerd.CRI.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.GetId()}); err != nil {
			k.t.Logf("kubetest: remove pod %s: %v", sb.GetId(), err)
		}
	}
}

// unmountAll unmounts every mount at or below dir, deepest first, as many
// times as it is stacked (the kubelet bind-mounts its root directory onto
// itself).
func unmountAll(dir string) {
	for range 10 {
		f, err := os.Open("/proc/self/mountinfo")
		if err != nil {
			return
		}
		var points []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
				points = append(points, fields[4])
			}
		}
		f.Close()
		if len(points) == 0 {
			return
		}
		slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
		for _, p := range points {
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
		}
	}
}

// PodLog is what container name of pod ns/name (restart attempt) wrote to
// its stdout and stderr, without the CRI log format's prefixes; "" while
// there is no log.
func (k *Kubelet) PodLog(ns, name, uid, container string, attempt int) string {
	b, err := os.ReadFile(filepath.Join(k.PodLogsDir, ns+"_"+name+"_"+uid, container, fmt.Sprintf("%d.log", attempt)))
	if err != nil {
		return ""
	}
	var out strings.Builder
	for line := range strings.SplitSeq(string(b), "\n") {
		// "<time> stdout|stderr F|P <text>"
		if f := strings.SplitN(line, " ", 4); len(f) == 4 {
			out.WriteString(f[3])
			if f[2] == "F" {
				out.WriteString("\n")
			}
		}
	}
	return out.String()
}
