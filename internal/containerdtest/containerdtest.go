// Package containerdtest is Coffer's kit for tests against a real
// containerd with its CRI plugin, as on a Kubernetes node: it starts a
// private containerd in a temporary directory (its own root, state, socket
// and runc root; Docker's containerd is never touched), imports locally
// built images (nothing is pulled), and makes pod sandboxes and containers
// through the CRI with the labels the kubelet sets.
//
// Two containerds can be used: Debian's 1.6 (/usr/bin/containerd, package
// containerd) and 2.2.9 built by scripts/test-tools.sh containerd (found
// through internal/testtools; it has NRI), and Debian's 1.6 with an OCI
// createRuntime hook in its base runtime spec (DebianHook, see Hooked: the
// delivery path of nodes without NRI). Pods use the host's network
// namespace (no CNI is needed) and are removed when the test ends.
//
// Tests skip when the process is not root or a binary is missing, and fail
// instead under COFFER_REQUIRE_TOOLS=1 (as CI sets).
package containerdtest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"coffer/internal/testtools"
)

// Image references the kit imports into every daemon.
const (
	PauseImage = "local.test/coffer/pause:1" // the sandbox image: waits for SIGTERM
	AppImage   = "local.test/coffer/app:1"   // busybox; carries the label ImageLabel=ImageLabelValue
	// ImageLabel is a LABEL baked into AppImage.
	ImageLabel, ImageLabelValue = "org.coffer.test.image", "app-image"
)

// Kind selects a containerd.
type Kind int

const (
	Debian Kind = iota // Debian's containerd 1.6 at /usr/bin
	V2                 // containerd 2.2.9 from scripts/test-tools.sh, with NRI
)

func (k Kind) String() string {
	if k == V2 {
		return "containerd-" + testtools.ContainerdVersion
	}
	if k == DebianHook {
		return "containerd-debian-hook"
	}
	return "containerd-debian"
}

// Daemon is one private containerd.
type Daemon struct {
	Kind      Kind
	Dir       string // everything the daemon writes, under a temporary directory
	Socket    string // its gRPC socket
	NRISocket string // its NRI socket (V2 only)
	// HookSocket is where a DebianHook daemon's createRuntime hook asks
	// (the test's agent listens there); empty for other kinds.
	HookSocket string
	hook       []string // DebianHook: the hook's argv
	bin, ctr   string
	CRI        runtimeapi.RuntimeServiceClient
	conn       *grpc.ClientConn

	mu  sync.Mutex
	cmd *exec.Cmd
	log *os.File
}

var (
	sharedMu sync.Mutex
	shared   = map[Kind]*Daemon{}
	failed   = map[Kind]error{}
)

// Skip skips t, or fails it under COFFER_REQUIRE_TOOLS=1.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("COFFER_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s (required by COFFER_REQUIRE_TOOLS=1)", msg)
	}
	t.Skip(msg)
}

// Shared returns the package's one daemon of kind k, starting it on first
// use; StopShared (from TestMain) stops it. It skips t when it cannot run.
func Shared(t testing.TB, k Kind) *Daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "containerdtest: needs root")
	}
	bin, ctr := "/usr/bin/containerd", "/usr/bin/ctr"
	if k == V2 {
		bin = testtools.Path(t, testtools.Containerd)
		ctr = filepath.Join(filepath.Dir(bin), "ctr")
	}
	for _, p := range []string{bin, ctr, "/usr/sbin/runc", "/bin/busybox"} {
		if _, err := os.Stat(p); err != nil {
			Skip(t, "containerdtest: %s missing (apt-get install containerd runc busybox-static; scripts/test-tools.sh containerd): %v", p, err)
		}
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if d := shared[k]; d != nil {
		return d
	}
	if err := failed[k]; err != nil {
		t.Fatalf("containerdtest: %v (failed before)", err)
	}
	d, err := start(k, bin, ctr, nil)
	if err != nil {
		failed[k] = err
		t.Fatalf("containerdtest: %v", err)
	}
	shared[k] = d
	return d
}

// StopShared stops the shared daemons and removes everything they wrote.
func StopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	for k, d := range shared {
		d.Close()
		delete(shared, k)
	}
}

func start(k Kind, bin, ctr string, hook []string) (*Daemon, error) {
	dir, err := os.MkdirTemp("", "coffer-ctrd-")
	if err != nil {
		return nil, err
	}
	d := &Daemon{Kind: k, Dir: dir, Socket: filepath.Join(dir, "containerd.sock"), bin: bin, ctr: ctr, hook: hook}
	if k == V2 {
		d.NRISocket = filepath.Join(dir, "nri.sock")
	}
	if k == DebianHook {
		if err := d.writeHookSpec(); err != nil {
			d.Close()
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(d.config()), 0o600); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.Start(); err != nil {
		d.Close()
		return nil, err
	}
	d.conn, err = grpc.NewClient("unix://"+d.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		d.Close()
		return nil, err
	}
	d.CRI = runtimeapi.NewRuntimeServiceClient(d.conn)
	if err := d.importImages(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// config is a version 2 configuration (containerd 2.x migrates it) with
// the settings this kind of machine needs (no CAP_SYS_RESOURCE, no
// AppArmor, cgroupfs).
func (d *Daemon) config() string {
	nri := ""
	if d.Kind == V2 {
		nri = fmt.Sprintf(`
[plugins."io.containerd.nri.v1.nri"]
  disable = false
  socket_path = %q
  plugin_path = %q
  plugin_config_path = %q
`, d.NRISocket, filepath.Join(d.Dir, "nri-plugins"), filepath.Join(d.Dir, "nri-conf"))
	}
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  disable_apparmor = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"%[10]s
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = %[7]q
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[8]q
    conf_dir = %[8]q
%[9]s`, filepath.Join(d.Dir, "root"), filepath.Join(d.Dir, "state"), d.Socket, d.Socket+".ttrpc",
		filepath.Join(d.Dir, "opt"), PauseImage, filepath.Join(d.Dir, "runc"), filepath.Join(d.Dir, "cni"), nri, d.hookConfig())
}

// Start starts the daemon (again, after Stop) and waits until its CRI
// answers.
func (d *Daemon) Start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd != nil {
		return errors.New("containerd already running")
	}
	logf, err := os.OpenFile(filepath.Join(d.Dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(d.bin, "--config", filepath.Join(d.Dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own shim next to it, then the system's runc.
	cmd.Env = []string{"PATH=" + filepath.Dir(d.bin) + ":/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + d.Dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	d.cmd, d.log = cmd, logf
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			d.cmd = nil
			logf.Close()
			return fmt.Errorf("%s exited: %v; log: %s", d.Kind, err, d.tail())
		default:
		}
		if err := d.ping(); err == nil {
			return nil // the goroutine above reaps it
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer within 60s; log: %s", d.Kind, d.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *Daemon) ping() error {
	out, err := exec.Command(d.ctr, "-a", d.Socket, "plugins", "ls").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == "io.containerd.grpc.v1" && f[1] == "cri" {
			if f[3] != "ok" {
				return fmt.Errorf("CRI plugin %s", f[3])
			}
			return nil
		}
	}
	return errors.New("no CRI plugin yet")
}

// Tail is the end of the daemon's log.
func (d *Daemon) Tail() string { return d.tail() }

func (d *Daemon) tail() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "containerd.log"))
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// Stop stops the daemon (SIGTERM, then SIGKILL after 20s). Its containers
// keep running in their shims, as on a real node.
func (d *Daemon) Stop() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil {
		return nil
	}
	pid := d.cmd.Process.Pid
	d.cmd = nil
	defer d.log.Close()
	_ = syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 200; i++ {
		if !alive(pid) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return fmt.Errorf("%s did not stop on SIGTERM; killed", d.Kind)
}

// alive reports whether pid is a live process that is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// Close removes every pod, stops the daemon and the shims it started, and
// removes its directory, unmounting what it mounted there.
func (d *Daemon) Close() {
	if d.CRI != nil && d.ping() == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if resp, err := d.CRI.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, sb := range resp.GetItems() {
				_, _ = d.CRI.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.GetId()})
				_, _ = d.CRI.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.GetId()})
			}
		}
		cancel()
	}
	if d.conn != nil {
		d.conn.Close()
	}
	_ = d.Stop()
	// Shims outlive their containerd: end those of this daemon (their
	// command line names its socket), by pid.
	for _, pid := range d.shims() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	unmountUnder(d.Dir)
	if err := os.RemoveAll(d.Dir); err != nil {
		fmt.Fprintf(os.Stderr, "containerdtest: remove %s: %v\n", d.Dir, err)
	}
}

// shims returns the pids of this daemon's shims.
func (d *Daemon) shims() []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") && slices.Contains(args, d.Socket) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// unmountUnder unmounts every mount below dir, deepest first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			points = append(points, fields[4])
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
	}
}

// importImages builds PauseImage and AppImage from the host's static
// busybox and imports them with ctr into the CRI's namespace.
func (d *Daemon) importImages() error {
	layer, err := busyboxLayer()
	if err != nil {
		return err
	}
	mk := func(cfg v1.Config) (v1.Image, error) {
		img, err := mutate.AppendLayers(empty.Image, layer)
		if err != nil {
			return nil, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		cf = cf.DeepCopy()
		// ctr imports only images of the host's platform.
		cf.Architecture, cf.OS, cf.Config = runtime.GOARCH, "linux", cfg
		return mutate.ConfigFile(img, cf)
	}
	pause, err := mk(v1.Config{Cmd: []string{"/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"}})
	if err != nil {
		return err
	}
	app, err := mk(v1.Config{Cmd: []string{"sleep", "3600"}, Labels: map[string]string{ImageLabel: ImageLabelValue}})
	if err != nil {
		return err
	}
	refs := map[name.Reference]v1.Image{}
	for ref, img := range map[string]v1.Image{PauseImage: pause, AppImage: app} {
		tag, err := name.NewTag(ref)
		if err != nil {
			return err
		}
		refs[tag] = img
	}
	path := filepath.Join(d.Dir, "images.tar")
	if err := tarball.MultiRefWriteToFile(path, refs); err != nil {
		return err
	}
	defer os.Remove(path)
	out, err := exec.Command(d.ctr, "-a", d.Socket, "-n", "k8s.io", "images", "import", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import: %v: %s", err, out)
	}
	// The CRI learns of imported images from containerd's events: wait
	// until it knows both.
	img := runtimeapi.NewImageServiceClient(d.conn)
	for _, ref := range []string{PauseImage, AppImage} {
		for i := 0; ; i++ {
			resp, err := img.ImageStatus(context.Background(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
			if err == nil && resp.GetImage() != nil {
				break
			}
			if i == 300 {
				return fmt.Errorf("the CRI does not see the imported %s: %v", ref, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// ImageID is the image id ("sha256:…", the config digest) of ref as the
// CRI reports it.
func (d *Daemon) ImageID(t testing.TB, ref string) string {
	t.Helper()
	resp, err := runtimeapi.NewImageServiceClient(d.conn).ImageStatus(context.Background(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil || resp.GetImage() == nil {
		t.Fatalf("containerdtest: image status %s: %v", ref, err)
	}
	return resp.GetImage().GetId()
}

func busyboxLayer() (v1.Layer, error) {
	bin, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Unix(0, 0)
	for _, dir := range []string{"bin/", "etc/", "tmp/", "run/", "proc/", "sys/", "dev/", "var/"} {
		mode := int64(0o755)
		if dir == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: mode, ModTime: now}); err != nil {
			return nil, err
		}
	}
	// As in Debian images: /var/run is a link to /run.
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "var/run", Linkname: "../run", ModTime: now}); err != nil {
		return nil, err
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), ModTime: now}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	for _, a := range []string{"cat", "echo", "id", "ls", "mount", "sh", "sleep", "stat", "test", "true", "grep"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", ModTime: now}); err != nil {
			return nil, err
		}
	}
	passwd := []byte("root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0o644, Size: int64(len(passwd)), ModTime: now}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(passwd); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// Pod describes a pod sandbox as the kubelet would make it.
type Pod struct {
	Namespace, Name string            // default "coffer-test" and a random name
	UID             string            // default random
	Labels          map[string]string // the pod's labels
	Annotations     map[string]string
}

// PodRef is a running sandbox.
type PodRef struct {
	ID     string
	Config *runtimeapi.PodSandboxConfig
}

// RunPod starts a pod sandbox with the labels the kubelet sets (the pod's,
// plus io.kubernetes.pod.name, .namespace and .uid) in the host's network
// namespace, removed when the test ends.
func (d *Daemon) RunPod(t testing.TB, p Pod) PodRef {
	t.Helper()
	if p.Namespace == "" {
		p.Namespace = "coffer-test"
	}
	if p.Name == "" {
		p.Name = "pod-" + randHex(4)
	}
	if p.UID == "" {
		p.UID = randUID()
	}
	labels := maps.Clone(p.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels["io.kubernetes.pod.name"] = p.Name
	labels["io.kubernetes.pod.namespace"] = p.Namespace
	labels["io.kubernetes.pod.uid"] = p.UID
	ann := maps.Clone(p.Annotations)
	if ann == nil {
		ann = map[string]string{}
	}
	ann["kubernetes.io/config.source"] = "api"
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: p.Name, Uid: p.UID, Namespace: p.Namespace},
		Labels:       labels,
		Annotations:  ann,
		LogDirectory: filepath.Join(d.Dir, "logs", p.UID),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The kubelet makes the pod's log directory; the CRI does not.
	if err := os.MkdirAll(cfg.LogDirectory, 0o755); err != nil {
		t.Fatal(err)
	}
	resp, err := d.CRI.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("containerdtest: run pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	id := resp.GetPodSandboxId()
	t.Cleanup(func() { d.RemovePod(t, id) })
	return PodRef{ID: id, Config: cfg}
}

// RemovePod stops and removes a pod sandbox and its containers.
func (d *Daemon) RemovePod(t testing.TB, id string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := d.CRI.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Logf("containerdtest: stop pod %s: %v", id, err)
	}
	if _, err := d.CRI.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Logf("containerdtest: remove pod %s: %v", id, err)
	}
}

// Container describes a container of a pod.
type Container struct {
	Name  string   // default "app"
	Image string   // default AppImage; passed as the kubelet does (Image and UserSpecifiedImage)
	Cmd   []string // default sleep 3600
	// ImageByID passes the image's id as Image, as recent kubelets do,
	// with Image (or AppImage) as UserSpecifiedImage only if UserImage.
	ImageByID, UserImage bool
	Annotations          map[string]string
	Attempt              uint32 // restart count: a container of the same name needs a new one
	// CreateOnly creates the container and does not start it: the CRI
	// reports it CONTAINER_CREATED, as while its createRuntime hook runs.
	CreateOnly bool
	// ReadOnlyRoot mounts the container's root file system read-only
	// (the pod spec's readOnlyRootFilesystem).
	ReadOnlyRoot bool
}

// RunContainer creates and starts a container in pod p and returns its id.
func (d *Daemon) RunContainer(t testing.TB, p PodRef, c Container) string {
	t.Helper()
	id, err := d.TryRunContainer(t, p, c)
	if err != nil {
		t.Fatalf("containerdtest: %v", err)
	}
	return id
}

// TryRunContainer is RunContainer returning the CRI's error (the container
// is removed with its pod).
func (d *Daemon) TryRunContainer(t testing.TB, p PodRef, c Container) (string, error) {
	t.Helper()
	if c.Name == "" {
		c.Name = "app"
	}
	if c.Image == "" {
		c.Image = AppImage
	}
	if len(c.Cmd) == 0 {
		c.Cmd = []string{"sleep", "3600"}
	}
	spec := &runtimeapi.ImageSpec{Image: c.Image, UserSpecifiedImage: c.Image}
	if c.ImageByID {
		spec = &runtimeapi.ImageSpec{Image: d.ImageID(t, c.Image)}
		if c.UserImage {
			spec.UserSpecifiedImage = c.Image
		}
	}
	md := p.Config.GetMetadata()
	cfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: c.Attempt},
		Image:    spec,
		Command:  c.Cmd,
		Labels: map[string]string{
			"io.kubernetes.container.name": c.Name,
			"io.kubernetes.pod.name":       md.GetName(),
			"io.kubernetes.pod.namespace":  md.GetNamespace(),
			"io.kubernetes.pod.uid":        md.GetUid(),
		},
		Annotations: c.Annotations,
		LogPath:     logPath(c.Name, c.Attempt),
		Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			ReadonlyRootfs:   c.ReadOnlyRoot,
		}},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	resp, err := d.CRI.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.ID, Config: cfg, SandboxConfig: p.Config})
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", c.Name, err)
	}
	id := resp.GetContainerId()
	if c.CreateOnly {
		return id, nil
	}
	if _, err := d.CRI.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		return id, fmt.Errorf("start container %s: %w", c.Name, err)
	}
	return id, nil
}

func logPath(name string, attempt uint32) string {
	return name + "_" + strconv.FormatUint(uint64(attempt), 10) + ".log"
}

// Log returns what container name (of attempt) in pod p wrote to its
// stdout and stderr, without the CRI log format's prefixes.
func (d *Daemon) Log(t testing.TB, p PodRef, name string, attempt uint32) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.Config.GetLogDirectory(), logPath(name, attempt)))
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

// StopContainer stops a container (SIGTERM, SIGKILL after timeout seconds).
func (d *Daemon) StopContainer(t testing.TB, id string, timeout int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := d.CRI.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: timeout}); err != nil {
		t.Fatalf("containerdtest: stop container %s: %v", id, err)
	}
}

// Exec runs cmd in a container (CRI ExecSync) and returns its stdout; the
// error holds stderr and the exit code.
func (d *Daemon) Exec(t testing.TB, id string, cmd ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := d.CRI.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 30})
	if err != nil {
		return "", err
	}
	if resp.GetExitCode() != 0 {
		return string(resp.GetStdout()), fmt.Errorf("exit %d: %s", resp.GetExitCode(), bytes.TrimSpace(resp.GetStderr()))
	}
	return string(resp.GetStdout()), nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randUID() string {
	h := randHex(16)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
