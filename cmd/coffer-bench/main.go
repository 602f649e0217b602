// Command coffer-bench measures Coffer end to end and writes what it finds
// as a table, as JSON and as a PNG plot.
//
// It drives a real coffer-server process over the real REST API and the
// real agent protocol (gRPC over mutual TLS 1.3):
//
//	coffer-bench fanout   simulated agents (the real agent code over an in-memory
//	                      runtime and deliverer): enrollment, start, rotation and
//	                      revocation fan-out, server CPU and peak RSS, agent memory
//	coffer-bench reconnect the same agents; the server is stopped, kept down, and
//	                      started again on its data dir: time until every agent is
//	                      back and a rotation reached every container, server CPU
//	coffer-bench fetch    fetch throughput: container start -> value delivered, at
//	                      concurrency C; with --vault, the same concurrency of KV v2
//	                      reads against a Vault dev server over TLS, in the same run
//	coffer-bench upstream linked secrets on a real Vault: write in Vault -> new
//	                      value in the container (polling, and socket audit
//	                      hints), and Vault requests per minute for N links
//	coffer-bench docker   one real coffer-agent and real Docker containers: start ->
//	                      file present, rotation and revocation -> every file
//
// The binaries it runs (coffer-server, coffer-agent) are taken from --bin-dir,
// by default the directory coffer-bench itself is in. See docs/benchmarks.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

func main() {
	os.Exit(run())
}

// common are the flags every mode has.
type common struct {
	BinDir     string
	JSON       string
	Plot       string
	WorkDir    string
	Quiet      bool
	CPUProfile string
	MemProfile string
	// ProfileServer, if set, runs the server as `coffer-bench server` with
	// CPU and heap profiles written into this directory.
	ProfileServer string
	// NativeGRPC (with ProfileServer) serves the agents with gRPC's own
	// transport on a second port: an experiment, see serve.go.
	NativeGRPC bool
	// ServerEnv is added to the server's environment (e.g. GOMEMLIMIT).
	ServerEnv []string
}

func (c *common) flags(cmd *cobra.Command, plot string) {
	f := cmd.Flags()
	f.StringVar(&c.BinDir, "bin-dir", "", "directory holding coffer-server and coffer-agent (default: coffer-bench's own)")
	f.StringVar(&c.JSON, "json", "", "write the report as JSON to this file (- for stdout)")
	f.StringVar(&c.Plot, "plot", plot, "write a PNG plot of the latency distributions here (empty: none)")
	f.StringVar(&c.WorkDir, "work-dir", "", "keep data dirs and logs here instead of a removed temp dir")
	f.BoolVarP(&c.Quiet, "quiet", "q", false, "print only the report")
	f.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of coffer-bench (the client side) over the measured rounds to this file")
	f.StringVar(&c.MemProfile, "memprofile", "", "write a heap profile of coffer-bench (the client side) to this file")
	f.StringArrayVar(&c.ServerEnv, "server-env", nil, "KEY=VALUE added to the server's environment, e.g. GOMEMLIMIT=200MiB (repeatable)")
	f.BoolVar(&c.NativeGRPC, "native-grpc", false, "experiment (needs --profile-server): agents talk to a second port served by gRPC's native transport instead of through net/http")
	f.StringVar(&c.ProfileServer, "profile-server", "", "run the server as `coffer-bench server` (same code as coffer-server) and write its CPU and heap profiles of the measured rounds into this directory")
}

// startServer starts coffer-server as a child process on a free port.
func (c *common) startServer(ctx context.Context, dir string, extra ...string) (*serverProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	bin, args, agentAddr, err := c.serverCommand("server")
	if err != nil {
		return nil, err
	}
	s, err := startServerAt(ctx, bin, dir, addr, "server.log", c.ServerEnv, append(args, extra...)...)
	if err == nil && agentAddr != "" {
		s.AgentAddr = agentAddr
	}
	return s, err
}

// serverCommand is the binary and first arguments of a server: coffer-server,
// or with --profile-server `coffer-bench server` writing its profiles as
// <ProfileServer>/<name>-cpu.prof and -heap.prof (and, with --native-grpc,
// the address of its second agent listener).
func (c *common) serverCommand(name string) (bin string, args []string, agentAddr string, err error) {
	if c.ProfileServer == "" {
		if c.NativeGRPC {
			return "", nil, "", errors.New("--native-grpc needs --profile-server")
		}
		return c.bin("coffer-server"), nil, "", nil
	}
	if err := os.MkdirAll(c.ProfileServer, 0o755); err != nil {
		return "", nil, "", err
	}
	self, err := os.Executable()
	if err != nil {
		return "", nil, "", err
	}
	args = []string{"server",
		"--cpuprofile", filepath.Join(c.ProfileServer, name+"-cpu.prof"),
		"--memprofile", filepath.Join(c.ProfileServer, name+"-heap.prof")}
	if c.NativeGRPC {
		if agentAddr, err = freeAddr(); err != nil {
			return "", nil, "", err
		}
		args = append(args, "--agent-listen", agentAddr)
	}
	return self, args, agentAddr, nil
}

// bin returns the path of a Coffer binary.
func (c *common) bin(name string) string {
	dir := c.BinDir
	if dir == "" {
		if exe, err := os.Executable(); err == nil {
			dir = filepath.Dir(exe)
		}
	}
	return filepath.Join(dir, name)
}

// workDir returns the directory for data dirs and logs, and a function
// removing it (unless the user gave it).
func (c *common) workDir() (string, func(), error) {
	if c.WorkDir != "" {
		return c.WorkDir, func() {}, os.MkdirAll(c.WorkDir, 0o700)
	}
	d, err := os.MkdirTemp("", "coffer-bench-")
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}

func (c *common) logf(format string, args ...any) {
	if !c.Quiet {
		stderrf("%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
}

// finish prints, saves and plots a report.
func (c *common) finish(rep *Report) error {
	rep.printTable(os.Stdout)
	if err := rep.writeJSON(c.JSON); err != nil {
		return err
	}
	if c.Plot != "" {
		if err := plotReport(rep, c.Plot); err != nil {
			return fmt.Errorf("plot: %w", err)
		}
		c.logf("plot written to %s", c.Plot)
	}
	return nil
}

// profileStart starts the CPU profiles (of coffer-bench and, with
// --profile-server, of the server) and returns what stops them and writes
// the heap profiles.
func (c *common) profileStart(srvs ...*serverProc) (stop func()) {
	var f *os.File
	if c.CPUProfile != "" {
		var err error
		if f, err = os.Create(c.CPUProfile); err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			c.logf("cpuprofile: %v", err)
			f = nil
		}
	}
	if c.ProfileServer != "" {
		for _, srv := range srvs {
			srv.cmd.Process.Signal(syscall.SIGUSR1)
		}
	}
	return func() {
		if f != nil {
			pprof.StopCPUProfile()
			f.Close()
		}
		if c.ProfileServer != "" {
			for _, srv := range srvs {
				srv.cmd.Process.Signal(syscall.SIGUSR2)
			}
		}
		c.heapProfile()
	}
}

// heapProfile writes a heap profile if asked; call it while the state to
// look at is still live.
func (c *common) heapProfile() {
	if c.MemProfile == "" {
		return
	}
	f, err := os.Create(c.MemProfile)
	if err != nil {
		c.logf("memprofile: %v", err)
		return
	}
	defer f.Close()
	pprof.Lookup("heap").WriteTo(f, 0)
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{
		Use:           "coffer-bench",
		Short:         "Measure Coffer: fan-out to simulated agents, fetch throughput (vs Vault), real Docker containers",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(fanoutCmd(ctx), reconnectCmd(ctx), fetchCmd(ctx), dockerCmd(ctx), serveCmd(ctx), upstreamCmd(ctx))
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "coffer-bench:", err)
		return 1
	}
	return 0
}

func fanoutCmd(ctx context.Context) *cobra.Command {
	o := fanoutOpts{}
	cmd := &cobra.Command{
		Use:   "fanout",
		Short: "Simulated agents: enrollment, start, rotation and revocation fan-out, server CPU and RSS",
		Example: `  coffer-bench fanout                                  # 1,000 agents x 10 containers, 20 rotations
  coffer-bench fanout --agents 50 --containers 10 --rotations 5 --revocations 2
  coffer-bench fanout --servers 3                      # three servers on etcd, agents spread over them`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			rep, err := runFanout(ctx, o)
			if err != nil {
				return err
			}
			return o.finish(rep)
		},
	}
	o.flags(cmd, "fanout.png")
	f := cmd.Flags()
	f.IntVar(&o.Agents, "agents", 1000, "simulated agents")
	f.IntVar(&o.Containers, "containers", 10, "simulated containers per agent")
	f.IntVar(&o.Rotations, "rotations", 20, "rotations of the secret bound to every container")
	f.IntVar(&o.Revocations, "revocations", 20, "revocations (binding deleted, then put back)")
	f.IntVar(&o.Bursts, "bursts", 5, "bursts of container starts")
	f.IntVar(&o.BurstSize, "burst-size", 1000, "containers started at once in a burst (spread over the agents)")
	f.DurationVar(&o.Settle, "settle", 500*time.Millisecond, "pause after each round, for acknowledgements and audit to drain")
	f.IntVar(&o.EnrollConc, "enroll-concurrency", 32, "agents enrolling at once")
	f.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "longest wait for one round")
	f.IntVar(&o.Servers, "servers", 1, "coffer-servers: more than 1 runs them on one etcd member (the etcd of scripts/test-tools.sh), agents spread over them, writes through the first")
	return cmd
}
