package main

import (
	"context"
	"fmt"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"coffer/internal/server"
)

func migrateCommand(cfg *server.Config) *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Copy a bolt data dir's store and CA into an empty etcd prefix, for several servers",
		Long: `migrate copies the store of a stopped server's data dir (coffer.db) into an
etcd prefix, with its CA (the key sealed under the master key, as servers on
etcd keep it). Values stay sealed under the same master key: give it as for
the server (--master-key-file, default <DIR>/master.key, or --seal). The bolt
store is not changed.

The prefix must be empty. A run that was interrupted can be run again: it
goes on (the prefix holds part of the same store), and once a migration is
complete, running it again writes nothing. A prefix holding anything else
is refused, and nothing is written.

Then start every server with --store etcd and a new data dir of its own
(docs/ha.md); the old data dir's admin.token and the agents enrolled on it
keep working. Its audit.log stays in the old data dir: keep it.`,
		Example: `  coffer-server migrate --from bolt:/var/lib/coffer --to etcd:https://etcd-1:2379,https://etcd-2:2379 \
      --etcd-ca etcd-ca.pem --etcd-cert client.pem --etcd-key client-key.pem
  coffer-server migrate --from bolt:./coffer-data --to etcd:http://127.0.0.1:2379 --etcd-prefix staging`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, ok := strings.CutPrefix(from, "bolt:")
			if !ok || dir == "" {
				return fmt.Errorf("--from %q: want bolt:DIR, the data dir of a stopped server", from)
			}
			eps, ok := strings.CutPrefix(to, "etcd:")
			if !ok || eps == "" {
				return fmt.Errorf("--to %q: want etcd:URL[,URL...], the client URLs of the etcd members", to)
			}
			cfg.Store = server.StoreEtcd
			cfg.Etcd.Endpoints = strings.Split(eps, ",")
			log := newLogger(cfg.LogLevel)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			st, err := server.Migrate(ctx, *cfg, dir, log)
			if err != nil {
				return err
			}
			if st.Already {
				fmt.Fprintf(cmd.OutOrStdout(), "already migrated: the prefix holds the %d keys of %s; nothing written\n", st.Keys, dir)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "migrated: %d keys copied (%d in the store) and the CA\n", st.Copied, st.Keys)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "bolt:DIR, the data dir of a stopped server")
	f.StringVar(&to, "to", "", "etcd:URL[,URL...], the etcd members' client URLs")
	f.StringVar(&cfg.Etcd.Prefix, "etcd-prefix", cfg.Etcd.Prefix, "the installation's key prefix in etcd (default coffer)")
	f.StringVar(&cfg.Etcd.CAFile, "etcd-ca", cfg.Etcd.CAFile, "CA bundle of the etcd members' certificates")
	f.StringVar(&cfg.Etcd.CertFile, "etcd-cert", cfg.Etcd.CertFile, "client certificate for etcd")
	f.StringVar(&cfg.Etcd.KeyFile, "etcd-key", cfg.Etcd.KeyFile, "client key for etcd (mode 0600)")
	return cmd
}
