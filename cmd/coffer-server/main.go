// Command coffer-server is Coffer's control plane: the encrypted secret
// store, bindings, tokens, audit trail and the agents' channel.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"coffer/internal/server"
	"coffer/internal/version"
)

func main() {
	os.Exit(run())
}

func run() int {
	cfg := server.Defaults()
	// The config file is read first; flags given on the command line then
	// override it, since their defaults are the file's values.
	configFile := configFlag(os.Args[1:])
	if configFile != "" {
		if err := cfg.LoadFile(configFile); err != nil {
			fmt.Fprintln(os.Stderr, "coffer-server:", err)
			return 1
		}
	}
	var sealPrevious []string
	cmd := &cobra.Command{
		Use:   "coffer-server",
		Short: "Coffer's control plane: encrypted secrets, bindings, tokens, audit, agents",
		Long: `coffer-server stores secrets encrypted at rest, maps them to containers by
label selectors and pushes them to coffer-agents over mutually authenticated TLS.

The first start initializes the data dir: a 256-bit master key (master.key,
0600; not with a KMS seal, whose master key stays in the KMS), a CA (ca.pem)
and server certificate, and a bootstrap admin token written to
<data-dir>/admin.token. Later starts reuse all of it.`,
		Example: `  coffer-server --data-dir /var/lib/coffer
  coffer-server --config /etc/coffer/server.yaml
  coffer-server --listen 127.0.0.1:7443 --san coffer.example.com
  coffer-server --version
  coffer-server --config server.yaml --seal vault-transit   # master key in Vault Transit
  coffer-server --store etcd --etcd-endpoints https://etcd-1:2379,https://etcd-2:2379,https://etcd-3:2379 \
      --etcd-ca etcd-ca.pem --etcd-cert coffer.pem --etcd-key coffer-key.pem \
      --data-dir /var/lib/coffer --master-key-file /etc/coffer/master.key   # several servers, docs/ha.md
  coffer-server rewrap --config new.yaml --from-config old.yaml`,
		Version:           version.Get().String(),
		SilenceUsage:      true,
		SilenceErrors:     true,
		Args:              cobra.NoArgs,
		PersistentPreRunE: func(*cobra.Command, []string) error { return addPrevious(&cfg, sealPrevious) },
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(cfg.LogLevel)
			v := version.Get()
			log.Info("coffer-server", "version", v.Version, "commit", v.Commit, "go", v.Go)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			s, err := server.New(ctx, cfg, log)
			if err != nil {
				return err
			}
			return s.Run(ctx)
		},
	}
	cmd.SetVersionTemplate("coffer-server {{.Version}}\n")
	f := cmd.PersistentFlags()
	f.StringVar(&configFile, "config", "", "YAML config file (keys: data_dir, listen, san, master_key_file, seal, store, etcd, etcd_join, advertise, kubernetes, max_versions, max_value_size, agent_cert_ttl, deleted_retention, log_level, audit_reanchor)")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the store, CA, audit trail and keys")
	f.StringVar(&cfg.MasterKeyFile, "master-key-file", cfg.MasterKeyFile, "master key file of the local seal (default <data-dir>/master.key)")
	f.StringVar(&cfg.Seal.Type, "seal", cfg.Seal.Type, "where the master key is: local, vault-transit, aws-kms or azure-kv (the KMS options are in the config's seal section)")
	f.StringArrayVar(&sealPrevious, "seal-previous", nil, "during a move to another master key: local:FILE, the old master key file, which then only opens values (repeatable)")
	f.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	f = cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "address to listen on (HTTPS and agents' gRPC)")
	f.StringSliceVar(&cfg.SANs, "san", cfg.SANs, "extra DNS names or IPs for the server certificate (repeatable)")
	f.IntVar(&cfg.MaxVersions, "max-versions", cfg.MaxVersions, "versions kept per secret")
	f.IntVar(&cfg.MaxValueSize, "max-value-size", cfg.MaxValueSize, "largest secret value in bytes")
	f.DurationVar(&cfg.AgentCertTTL, "agent-cert-ttl", cfg.AgentCertTTL, "lifetime of agent certificates")
	f.BoolVar(&cfg.AuditReanchor, "audit-reanchor", cfg.AuditReanchor, "for one start after an investigation: accept an audit trail that ends before the head anchored in the store (the loss is recorded)")
	f.StringVar(&cfg.Store, "store", cfg.Store, "where the data lives: bolt (one file in the data dir) or etcd (shared by several servers, see docs/ha.md)")
	f.StringSliceVar(&cfg.Etcd.Endpoints, "etcd-endpoints", cfg.Etcd.Endpoints, "with --store etcd: client URLs of the etcd members, comma-separated")
	f.StringVar(&cfg.Etcd.Prefix, "etcd-prefix", cfg.Etcd.Prefix, "with --store etcd: this installation's key prefix in etcd (default coffer)")
	f.StringVar(&cfg.Etcd.CAFile, "etcd-ca", cfg.Etcd.CAFile, "with --store etcd: CA bundle of the etcd members' certificates")
	f.StringVar(&cfg.Etcd.CertFile, "etcd-cert", cfg.Etcd.CertFile, "with --store etcd: client certificate for etcd")
	f.StringVar(&cfg.Etcd.KeyFile, "etcd-key", cfg.Etcd.KeyFile, "with --store etcd: client key for etcd (mode 0600)")
	f.BoolVar(&cfg.EtcdJoin, "etcd-join", cfg.EtcdJoin, "with --store etcd: only join an existing installation; an empty prefix is an error")
	f.StringVar(&cfg.Kubernetes.Kubeconfig, "kubeconfig", cfg.Kubernetes.Kubeconfig, "a kubeconfig file (or in-cluster) with which the server reads the Kubernetes API server (docs/kubernetes.md)")
	f.StringSliceVar(&cfg.Kubernetes.AgentServiceAccounts, "k8s-agent-service-accounts", cfg.Kubernetes.AgentServiceAccounts, "NAMESPACE/NAME of the ServiceAccount(s) whose pods' projected tokens enroll node agents (Kubernetes node attestation; needs --kubeconfig)")
	f.StringVar(&cfg.Kubernetes.AgentAudience, "k8s-agent-audience", cfg.Kubernetes.AgentAudience, "audience the agents' projected tokens must carry (default coffer)")
	f.StringToStringVar(&cfg.Kubernetes.AgentLabels, "k8s-agent-labels", cfg.Kubernetes.AgentLabels, "host labels of agents enrolled by attestation, besides k8s.node=NODE, e.g. cluster=prod")
	f.StringVar(&cfg.Kubernetes.AgentScope, "k8s-agent-scope", cfg.Kubernetes.AgentScope, "scope of agents enrolled by attestation, e.g. 'shop/*' (default: all secrets)")
	f.StringVar(&cfg.Advertise, "advertise", cfg.Advertise, "with --store etcd: host:port at which clients reach this server (default: the listening address)")
	cmd.AddCommand(rewrapCommand(&cfg), migrateCommand(&cfg))
	f.DurationVar(&cfg.DeletedRetention, "deleted-retention", cfg.DeletedRetention, "how long a deleted secret can be restored before it is purged (1m to 8760h)")
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "coffer-server:", err)
		return 1
	}
	return 0
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// configFlag finds --config in args without parsing the other flags.
func configFlag(args []string) string {
	fs := pflag.NewFlagSet("config", pflag.ContinueOnError)
	fs.ParseErrorsAllowlist.UnknownFlags = true
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	path := fs.String("config", "", "")
	_ = fs.Parse(args)
	return *path
}
