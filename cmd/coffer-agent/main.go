// Command coffer-agent runs on every host: it enrolls with the server once,
// then delivers the secrets bound to each container into that container's
// memory, rotates them live and removes them on revocation.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"coffer/internal/agent"
	"coffer/internal/container"
	"coffer/internal/container/containerd"
	"coffer/internal/container/docker"
	"coffer/internal/deliver"
	"coffer/internal/deliver/tmpfs"
	"coffer/internal/execstate"
	"coffer/internal/hook"
	"coffer/internal/identity"
	"coffer/internal/nri"
	"coffer/internal/version"
)

func main() {
	tmpfs.Init() // runs the namespace helper and exits when started as it
	os.Exit(run())
}

func run() int {
	var server, joinToken, k8sTokenFile, caFile, stateDir, name, dockerHost, dir, logLevel string
	var runtimeName, containerdSocket, nriSocket, nodeName, hookSocket string
	exit := 0
	var sizeMiB int
	var onlyLabels map[string]string
	hostname, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "coffer-agent",
		Short: "Deliver secrets into container memory on this host",
		Long: `coffer-agent watches the container runtime (Docker, or containerd's CRI on a
Kubernetes node) and delivers exactly the secrets bound to each container
into a tmpfs inside that container's mount namespace (default
/run/secrets/<name> on Docker, /run/coffer/<name> on containerd, mounted
noswap,nosuid,nodev,noexec). Values live only in memory: never on the
host's disk.

With --runtime containerd, selectors see a pod's labels plus the reserved
keys k8s.namespace, k8s.pod and k8s.container, set from the runtime (a pod
label with one of these keys, or k8s.serviceaccount, is ignored). The
server honours the k8s.* keys only for an agent enrolled with the host
label k8s.node=NODE (--agent-labels on its join token); with --kubeconfig
it confirms each pod with the API server and adds k8s.serviceaccount. On
containerd 2.x the agent also registers an NRI plugin (--nri-socket) that
writes a container's files before its first instruction; where there is no
NRI (containerd 1.6/1.7, CRI-O) the OCI createRuntime hook "coffer-agent
hook" does the same through --hook-socket; a pod annotated
coffer/require-secrets=true does not start without them (the kubelet
retries). See docs/kubernetes.md.

The first start enrolls with a one-time join token (coffer token create
--role agent), or on a Kubernetes node with --k8s-token-file, the
ServiceAccount token the kubelet projects into the agent's pod (audience
coffer): the server checks it with the API server and enrolls the agent
under its node's name, with host label k8s.node=NODE (one DaemonSet
enrolls every node; no join token). The agent's key and certificate are
kept in --state-dir and reused on restart. All later traffic is mutually
authenticated TLS 1.3.

--server takes one address or several (a:7443,b:7443,c:7443), and a host
name may have several addresses in DNS: the agent starts at a random one,
moves to the next when its server goes away, and is back within about a
second of any server being reachable again. All share one CA and one
--state-dir.`,
		Example: `  coffer-agent --server 127.0.0.1:7443 --ca-cert ca.pem --join-token "$JOIN" --state-dir /var/lib/coffer-agent
  coffer-agent --server 127.0.0.1:7443 --ca-cert ca.pem --state-dir /var/lib/coffer-agent   # already enrolled
  coffer-agent --server coffer-1:7443,coffer-2:7443,coffer-3:7443 --ca-cert ca.pem --state-dir /var/lib/coffer-agent
  coffer-agent --addr https://127.0.0.1:7443 --cacert ca.pem   # the coffer CLI's spellings work too
  coffer-agent --runtime containerd --containerd-socket /run/containerd/containerd.sock --server coffer:7443 --ca-cert ca.pem
  coffer-agent --runtime containerd --k8s-token-file /var/run/secrets/coffer/token --server coffer:7443 --ca-cert ca.pem
  coffer-agent --version`,
		Version:       version.Get().String(),
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			server, err := serverAddr(server)
			if err != nil {
				return err
			}
			if err := checkRuntimeFlags(cmd.Flags(), runtimeName); err != nil {
				return err
			}
			if runtimeName == "containerd" && !cmd.Flags().Changed("target-dir") {
				dir = containerdTargetDir
			}
			log := newLogger(logLevel)
			hardenProcess(log)
			if _, err := agent.ParseServers(server); err != nil {
				return err
			}
			caPEM, err := os.ReadFile(caFile)
			if err != nil {
				return fmt.Errorf("--ca-cert: %w", err)
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			cred, enrollName, err := credential(cmd.Flags(), joinToken, k8sTokenFile, name)
			if err != nil {
				return err
			}
			cert, err := agent.LoadOrEnrollWith(ctx, server, caPEM, stateDir, enrollName, cred)
			if err != nil {
				return err
			}
			if n, err := identity.AgentName(cert.Leaf); err == nil {
				name = n // the server names an attested agent after its node
			}
			rt, ctrd, closeRT, err := newRuntime(runtimeName, dockerHost, containerdSocket, log)
			if err != nil {
				return err
			}
			defer closeRT()
			d, err := tmpfs.New(tmpfs.Config{Dir: dir, SizeBytes: int64(sizeMiB) << 20, Logger: log})
			if err != nil {
				return err
			}
			defer d.Close()
			v := version.Get()
			log.Info("coffer-agent starting", "name", name, "server", server, "version", v.Version, "commit", v.Commit,
				"runtime", runtimeName, "target_dir", dir, "node", nodeName)
			var del deliver.Deliverer = d
			var gate *hook.Gate
			hookRT := hookRuntime(rt, ctrd, cmd.Flags().Changed("hook-socket"))
			if hookRT != nil && hookSocket != "" {
				gate = hook.NewGate(d, log)
				del = gate
			}
			ag := agent.New(agent.Config{Server: server, CAPEM: caPEM, Cert: cert, StateDir: stateDir, Runtime: rt, Deliverer: del, Logger: log, OnlyLabels: onlyLabels,
				ExecState: execstate.ProcReader{Dir: dir}})
			if gate != nil {
				hs, err := hook.New(hook.Config{Socket: hookSocket, Agent: ag, Runtime: hookRT, Gate: gate, Logger: log})
				if err != nil {
					return fmt.Errorf("--hook-socket: %w", err)
				}
				defer hs.Close()
				go func() {
					if err := hs.Serve(ctx); err != nil {
						log.Error("OCI hook socket failed; containers start without early delivery", "err", err)
					}
				}()
			}
			if ctrd != nil && nriSocket != "" {
				plugin, err := nri.New(nri.Config{Socket: nriSocket, Dir: dir, SizeBytes: int64(sizeMiB) << 20, Agent: ag, Identity: ctrd, Logger: log})
				if err != nil {
					return err
				}
				go plugin.Run(ctx)
			}
			return ag.Run(ctx)
		},
	}
	cmd.SetVersionTemplate("coffer-agent {{.Version}}\n")
	cmd.AddCommand(hookCommand(&exit))
	cmd.AddCommand(runcCommand(&exit))
	f := cmd.Flags()
	f.SetNormalizeFunc(flagAliases)
	f.StringVar(&server, "server", "127.0.0.1:7443", "coffer-server address host:port (or https://host:port), or several separated by commas; alias --addr")
	f.StringVar(&joinToken, "join-token", os.Getenv("COFFER_JOIN_TOKEN"), "one-time join token for the first start (env COFFER_JOIN_TOKEN)")
	f.StringVar(&k8sTokenFile, "k8s-token-file", "", "on a Kubernetes node: enroll with this projected ServiceAccount token (audience coffer) instead of a join token; the agent is named after its node")
	f.StringVar(&caFile, "ca-cert", "ca.pem", "the Coffer CA certificate (the server's <data-dir>/ca.pem); alias --cacert")
	f.StringVar(&stateDir, "state-dir", "/var/lib/coffer-agent", "where the agent keeps its own key and certificate (never a secret)")
	f.StringVar(&name, "name", hostname, "this agent's name")
	f.StringVar(&runtimeName, "runtime", "docker", "container runtime: docker, or containerd (its CRI, namespace k8s.io: Kubernetes nodes)")
	f.StringVar(&dockerHost, "docker-host", "", "Docker engine address (default DOCKER_HOST or the local socket); --runtime docker only")
	f.StringVar(&containerdSocket, "containerd-socket", containerd.DefaultSocket, "containerd's socket; --runtime containerd only")
	f.StringVar(&nriSocket, "nri-socket", nri.DefaultSocket, "NRI socket for race-free first delivery (files written before the container's first instruction); empty: off; --runtime containerd only")
	f.StringVar(&hookSocket, "hook-socket", hook.DefaultSocket, "unix socket (root-only, 0600) where the OCI createRuntime hook `coffer-agent hook` asks for race-free first delivery on containerd without NRI (1.6, 1.7) and CRI-O; empty: off. With --runtime docker it is off unless given: the socket the runtime wrapper `coffer-agent runc` (docker run --runtime coffer) points its hook at")
	f.StringVar(&nodeName, "node-name", hostname, "this host's Kubernetes node name (logged only: the server checks pods against the agent's host label k8s.node, set at enrollment)")
	f.StringVar(&dir, "target-dir", "/run/secrets", "directory inside containers where secrets land (default "+containerdTargetDir+" with --runtime containerd)")
	f.IntVar(&sizeMiB, "tmpfs-size", 4, "size cap of the tmpfs in each container, MiB")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringToStringVar(&onlyLabels, "only-labels", nil, "serve only containers with all these labels, e.g. coffer.enable=true (default: every container)")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "coffer-agent:", err)
		if exit != 0 {
			return exit
		}
		return 1
	}
	return exit
}

// credential is what the agent enrolls with, and the name it asks for: with
// --k8s-token-file none unless --name is given (the server names the agent
// after its node).
func credential(f *pflag.FlagSet, joinToken, k8sTokenFile, name string) (agent.Credential, string, error) {
	if k8sTokenFile == "" {
		return agent.Credential{JoinToken: joinToken}, name, nil
	}
	if joinToken != "" {
		return agent.Credential{}, "", errors.New("--k8s-token-file: give it or a join token (--join-token, COFFER_JOIN_TOKEN), not both")
	}
	if !f.Changed("name") {
		name = ""
	}
	return agent.Credential{K8sTokenFile: k8sTokenFile}, name, nil
}

// containerdTargetDir is the default target directory on containerd: a
// tmpfs on /run/secrets would hide the ServiceAccount token that the
// kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount in
// images where /var/run links to /run.
const containerdTargetDir = "/run/coffer"

// checkRuntimeFlags refuses an unknown runtime and the other runtime's flags.
func checkRuntimeFlags(f *pflag.FlagSet, runtimeName string) error {
	switch runtimeName {
	case "docker":
		for _, fl := range []string{"containerd-socket", "nri-socket", "node-name"} {
			if f.Changed(fl) {
				return fmt.Errorf("--%s: only with --runtime containerd", fl)
			}
		}
	case "containerd":
		if f.Changed("docker-host") {
			return errors.New("--docker-host: only with --runtime docker")
		}
	default:
		return fmt.Errorf("--runtime %q: want docker or containerd", runtimeName)
	}
	return nil
}

// newRuntime makes the runtime --runtime names (and returns it as ctrd too
// when it is containerd's).
func newRuntime(runtimeName, dockerHost, containerdSocket string, log *slog.Logger) (container.Runtime, *containerd.Runtime, func(), error) {
	if runtimeName == "containerd" {
		rt, err := containerd.New(containerd.Config{Socket: containerdSocket, Logger: log})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--containerd-socket: %w", err)
		}
		return rt, rt, func() { rt.Close() }, nil
	}
	rt, err := docker.New(docker.Config{Host: dockerHost, Logger: log})
	if err != nil {
		return nil, nil, nil, err
	}
	return rt, nil, func() { rt.Close() }, nil
}

// flagAliases accepts the coffer CLI's flag names: --addr is --server,
// --cacert is --ca-cert.
func flagAliases(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	switch name {
	case "addr":
		name = "server"
	case "cacert":
		name = "ca-cert"
	}
	return pflag.NormalizedName(name)
}

// serverAddr accepts host:port or https://host:port (the CLI's --addr
// form), or several of them separated by commas, and returns them as
// host:port,... (agent.ParseServers checks the list itself).
func serverAddr(s string) (string, error) {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if rest, ok := strings.CutPrefix(p, "https://"); ok {
			p = strings.TrimSuffix(rest, "/")
		}
		host, port, err := net.SplitHostPort(p)
		if err != nil || host == "" || port == "" || strings.ContainsAny(p, "/?#@") {
			return "", fmt.Errorf("--server %q: want host:port or https://host:port, or several separated by commas", parts[i])
		}
		parts[i] = p
	}
	return strings.Join(parts, ","), nil
}

// hardenProcess keeps secret values out of swap and core dumps where the
// kernel lets us.
func hardenProcess(log *slog.Logger) {
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT); err != nil {
		log.Warn("cannot lock memory; values could reach swap if swap is on", "err", err)
	}
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		log.Warn("cannot disable core dumps", "err", err)
	}
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
