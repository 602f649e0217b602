package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/moby/client"
	"github.com/prometheus/procfs"
	"github.com/spf13/cobra"
)

// dockerOpts are the docker mode's knobs.
type dockerOpts struct {
	common
	Containers  int
	StartBatch  int
	Rotations   int
	Revocations int
	Settle      time.Duration
	Timeout     time.Duration
}

// errNoDocker means the machine cannot run the docker mode (not root, no
// engine); scripts/bench.sh skips the mode then.
var errNoDocker = errors.New("docker mode needs root and a Docker engine")

const (
	benchImage = "coffer-bench/busybox:1"
	ownerLabel = "coffer-bench.owner"
	tokenFile  = "token"
)

func dockerCmd(ctx context.Context) *cobra.Command {
	o := dockerOpts{}
	cmd := &cobra.Command{
		Use:   "docker",
		Short: "One real coffer-agent, real Docker containers: start -> file present, rotation/revocation -> every file",
		Long: `Runs coffer-server and one coffer-agent (the real binaries) and N busybox
containers (--network none, removed at the end, also after a crash: leftovers
of dead coffer-bench processes are removed at the next start). It measures:

  start -> file present    from the engine's StartedAt to the file holding the
                           value, seen through /proc/<pid>/root, with
                           --start-batch containers started at once;
  rotation, revocation     from the API call returning to each container's
                           file changing (inotify on the container's tmpfs);
  agent memory             RSS of coffer-agent and its tmpfs helper.

Needs root and the docker CLI; the image is built from the host's
/bin/busybox (Debian's busybox-static) without pulling anything.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			rep, err := runDocker(ctx, o)
			if err != nil {
				return err
			}
			return o.finish(rep)
		},
	}
	o.flags(cmd, "docker.png")
	f := cmd.Flags()
	f.IntVar(&o.Containers, "containers", 100, "containers on the agent")
	f.IntVar(&o.StartBatch, "start-batch", 20, "containers started at once")
	f.IntVar(&o.Rotations, "rotations", 20, "rotations of the secret bound to every container")
	f.IntVar(&o.Revocations, "revocations", 10, "revocations (binding deleted, then put back)")
	f.DurationVar(&o.Settle, "settle", 300*time.Millisecond, "pause after each round")
	f.DurationVar(&o.Timeout, "timeout", time.Minute, "longest wait for one round")
	return cmd
}

// dockerCLI runs the docker CLI and returns its trimmed stdout.
func dockerCLI(ctx context.Context, stdin []byte, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", args[0], err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// reapLeftovers removes containers of coffer-bench processes that are gone.
func reapLeftovers(ctx context.Context) {
	out, err := dockerCLI(ctx, nil, "ps", "-a", "--filter", "label="+ownerLabel, "--format", `{{.ID}} {{.Label "`+ownerLabel+`"}}`)
	if err != nil {
		return
	}
	var dead []string
	for _, line := range strings.Split(out, "\n") {
		id, owner, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if pid, err := strconv.Atoi(owner); err == nil && pid != os.Getpid() {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				continue
			}
		}
		dead = append(dead, id)
	}
	if len(dead) > 0 {
		dockerCLI(ctx, nil, append([]string{"rm", "-f"}, dead...)...)
	}
}

// ensureImage imports a tiny busybox image from the host's static busybox.
func ensureImage(ctx context.Context) error {
	if _, err := dockerCLI(ctx, nil, "image", "inspect", benchImage); err == nil {
		return nil
	}
	bin, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("read /bin/busybox (install busybox-static): %w", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"bin/", "run/", "tmp/", "proc/", "sys/", "dev/", "etc/"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755})
	}
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin))})
	tw.Write(bin)
	for _, a := range []string{"sh", "sleep", "cat", "ls"} {
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox"})
	}
	if err := tw.Close(); err != nil {
		return err
	}
	_, err = dockerCLI(ctx, buf.Bytes(), "import", "-", benchImage)
	return err
}

// realContainer is one benchmark container.
type realContainer struct {
	id  string
	pid int
}

func (c *realContainer) file() string {
	return fmt.Sprintf("/proc/%d/root/run/secrets/%s", c.pid, tokenFile)
}

func runDocker(ctx context.Context, o dockerOpts) (*Report, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: not root", errNoDocker)
	}
	if _, err := dockerCLI(ctx, nil, "version", "--format", "{{.Server.Version}}"); err != nil {
		return nil, fmt.Errorf("%w: %v", errNoDocker, err)
	}
	engine, _ := dockerCLI(ctx, nil, "version", "--format", "{{.Server.Version}}")
	rep := newReport("docker", map[string]any{
		"containers": o.Containers, "start_batch": o.StartBatch, "rotations": o.Rotations,
		"revocations": o.Revocations, "docker": engine,
	})
	reapLeftovers(ctx)
	if err := ensureImage(ctx); err != nil {
		return nil, err
	}
	dc, err := client.New(client.FromEnv)
	if err != nil {
		return nil, err
	}
	defer dc.Close()
	dir, cleanup, err := o.workDir()
	if err != nil {
		return nil, err
	}
	defer cleanup()
	srv, err := o.startServer(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer srv.Stop()

	run := randHex(4)
	value := []byte(randomValue())
	defer clear(value)
	if err := srv.putSecret(ctx, "bench/docker", value); err != nil {
		return nil, err
	}
	bind := binding{Secret: "bench/docker", Selector: "coffer-bench.run=" + run, File: tokenFile}
	if err := srv.putBinding(ctx, "bench-docker", bind); err != nil {
		return nil, err
	}
	ag, err := startAgentProc(ctx, o.bin("coffer-agent"), srv, dir, "coffer-bench.run="+run)
	if err != nil {
		return nil, err
	}
	defer ag.stop()
	o.logf("server %s, agent pid %d; creating %d containers", srv.Addr, ag.cmd.Process.Pid, o.Containers)

	ctrs := make([]*realContainer, o.Containers)
	defer func() {
		var ids []string
		for _, c := range ctrs {
			if c != nil {
				ids = append(ids, c.id)
			}
		}
		if len(ids) > 0 {
			dockerCLI(context.Background(), nil, append([]string{"rm", "-f"}, ids...)...)
		}
	}()
	if err := parallel(ctx, o.Containers, 8, func(i int) error {
		id, err := dockerCLI(ctx, nil, "create", "--network", "none", "--label", ownerLabel+"="+strconv.Itoa(os.Getpid()),
			"--label", "coffer-bench.run="+run, "--name", fmt.Sprintf("coffer-bench-%s-%d", run, i), benchImage, "sleep", "3600")
		if err == nil {
			ctrs[i] = &realContainer{id: id}
		}
		return err
	}); err != nil {
		return nil, err
	}

	// Start -> file present, StartBatch at a time.
	var startLat, startCall, inspectCall []time.Duration
	var mu sync.Mutex
	for lo := 0; lo < o.Containers; lo += o.StartBatch {
		hi := min(lo+o.StartBatch, o.Containers)
		err := parallel(ctx, hi-lo, hi-lo, func(j int) error {
			c := ctrs[lo+j]
			t0 := time.Now()
			if _, err := dc.ContainerStart(ctx, c.id, client.ContainerStartOptions{}); err != nil {
				return err
			}
			t1 := time.Now()
			res, err := dc.ContainerInspect(ctx, c.id, client.ContainerInspectOptions{})
			if err != nil {
				return err
			}
			mu.Lock()
			startCall, inspectCall = append(startCall, t1.Sub(t0)), append(inspectCall, time.Since(t1))
			mu.Unlock()
			c.pid = res.Container.State.Pid
			started, err := time.Parse(time.RFC3339Nano, res.Container.State.StartedAt)
			if err != nil {
				return err
			}
			deadline := time.Now().Add(o.Timeout)
			for {
				if b, err := os.ReadFile(c.file()); err == nil && bytes.Equal(b, value) {
					d := time.Since(started)
					clear(b)
					mu.Lock()
					startLat = append(startLat, d)
					mu.Unlock()
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("container %s: no file after %s", c.id[:12], o.Timeout)
				}
				time.Sleep(500 * time.Microsecond)
			}
		})
		if err != nil {
			return nil, err
		}
		time.Sleep(o.Settle)
	}
	rep.addLatency(summarize(fmt.Sprintf("start -> file present (%d at once, %d containers)", o.StartBatch, o.Containers), startLat), "p99 <= 50 ms")
	// What the engine itself takes meanwhile: the agent inspects each
	// started container through the same engine.
	rep.addLatency(summarize(fmt.Sprintf("engine: ContainerStart call (%d at once)", o.StartBatch), startCall), "").noPlot = true
	rep.addLatency(summarize(fmt.Sprintf("engine: ContainerInspect call during the starts (%d at once)", o.StartBatch), inspectCall), "").noPlot = true
	o.logf("%d containers running with their file", o.Containers)
	agentMemory(rep, ag.cmd.Process.Pid, o.Containers, "after the starts")

	w, err := newWatcher(ctrs)
	if err != nil {
		return nil, err
	}
	defer w.close()
	// Latencies from the API call returning (the goal's definition) and
	// from it being sent (adding the durable store and audit writes the
	// API makes before it answers).
	round := func(what string, check func(b []byte, err error) bool, call func() error) (fromRet, fromSent []time.Duration, err error) {
		e := w.expect(check)
		sent := time.Now()
		err = call()
		ret := time.Now()
		if err != nil {
			return nil, nil, err
		}
		if err := e.wait(ctx, w, o.Timeout); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", what, err)
		}
		fromRet, _ = e.since(ret, nil)
		fromSent, _ = e.since(sent, nil)
		o.logf("%s: API call %s, last file %s after it returned", what, ret.Sub(sent).Round(100*time.Microsecond), maxDur(fromRet).Round(100*time.Microsecond))
		time.Sleep(o.Settle)
		return fromRet, fromSent, nil
	}
	var rot, rotSent, rev, revSent, grant []time.Duration
	for range o.Rotations {
		next := []byte(randomValue())
		a, b, err := round("rotation", func(b []byte, err error) bool { return err == nil && bytes.Equal(b, next) },
			func() error { return srv.putSecret(ctx, "bench/docker", next) })
		clear(next)
		if err != nil {
			return nil, err
		}
		rot, rotSent = append(rot, a...), append(rotSent, b...)
	}
	for range o.Revocations {
		a, b, err := round("revocation", func(_ []byte, err error) bool { return errors.Is(err, os.ErrNotExist) },
			func() error { return srv.deleteBinding(ctx, "bench-docker") })
		if err != nil {
			return nil, err
		}
		rev, revSent = append(rev, a...), append(revSent, b...)
		a, _, err = round("re-grant", func(b []byte, err error) bool { return err == nil && len(b) > 0 },
			func() error { return srv.putBinding(ctx, "bench-docker", bind) })
		if err != nil {
			return nil, err
		}
		grant = append(grant, a...)
	}
	n := fmt.Sprintf("(%d x %d)", o.Rotations, o.Containers)
	rep.addLatency(summarize("rotation: PUT returned -> new value in file "+n, rot), "p99 <= 250 ms")
	rep.addLatency(summarize("rotation: PUT sent -> new value in file "+n, rotSent), "")
	n = fmt.Sprintf("(%d x %d)", o.Revocations, o.Containers)
	rep.addLatency(summarize("revocation: binding DELETE returned -> file gone "+n, rev), "p99 <= 250 ms")
	rep.addLatency(summarize("revocation: binding DELETE sent -> file gone "+n, revSent), "")
	rep.addLatency(summarize("grant: binding PUT returned -> file present "+n, grant), "")
	agentMemory(rep, ag.cmd.Process.Pid, o.Containers, "after the rounds")
	if u, err := usageOf(srv.Pid()); err == nil {
		rep.addFigure("server peak RSS", mib(u.PeakRSS), "MiB", "")
	}
	return rep, nil
}

// agentMemory reports the RSS of coffer-agent and of its helper processes.
func agentMemory(rep *Report, pid, containers int, when string) {
	u, err := usageOf(pid)
	if err != nil {
		return
	}
	helpers := uint64(0)
	if procs, err := procfs.AllProcs(); err == nil {
		for _, p := range procs {
			if st, err := p.Stat(); err == nil && st.PPID == pid {
				if s, err := p.NewStatus(); err == nil {
					helpers += s.VmRSS
				}
			}
		}
	}
	rep.addFigure(fmt.Sprintf("coffer-agent RSS, %d containers, %s", containers, when), mib(u.RSSBytes), "MiB", "<= 30 MB at 500")
	rep.addFigure("coffer-agent peak RSS (VmHWM), "+when, mib(u.PeakRSS), "MiB", "")
	rep.addFigure("coffer-agent tmpfs helper process(es) RSS, "+when, mib(helpers), "MiB", "")
}

// agentProc is a coffer-agent child process.
type agentProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startAgentProc runs coffer-agent for the containers with label only
// (other containers on the engine belong to others).
func startAgentProc(ctx context.Context, bin string, srv *serverProc, dir, only string) (*agentProc, error) {
	tok, err := srv.joinToken(ctx)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	a := &agentProc{done: make(chan struct{}), cmd: exec.Command(bin, "--server", srv.Addr, "--ca-cert", filepath.Join(srv.Dir, "ca.pem"),
		"--state-dir", filepath.Join(dir, "agent"), "--name", "bench-docker", "--join-token", tok, "--log-level", "warn", "--only-labels", only)}
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { a.cmd.Wait(); close(a.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var agents []struct {
			Connected bool `json:"connected"`
		}
		if err := srv.call(ctx, "GET", "/v1/agents", nil, &agents); err == nil && len(agents) == 1 && agents[0].Connected {
			return a, nil
		}
		select {
		case <-a.done:
			return nil, fmt.Errorf("coffer-agent exited; see %s", logf.Name())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.stop()
			return nil, errors.New("coffer-agent did not connect within 30s")
		}
	}
}

func (a *agentProc) stop() {
	a.cmd.Process.Signal(os.Interrupt)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// putSecret stores value under name.
func (s *serverProc) putSecret(ctx context.Context, name string, value []byte) error {
	enc := base64.StdEncoding.EncodeToString(value)
	return s.call(ctx, "PUT", "/v1/secrets/"+name, map[string]string{"value": enc}, nil)
}
