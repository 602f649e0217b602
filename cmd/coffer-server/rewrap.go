package main

import (
	"context"
	"fmt"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"coffer/internal/catalog"
	"coffer/internal/server"
)

// addPrevious adds the --seal-previous key files to cfg's previous keys.
func addPrevious(cfg *server.Config, flags []string) error {
	for _, f := range flags {
		p, err := server.ParseSealPrevious(f)
		if err != nil {
			return err
		}
		cfg.Seal.Previous = append(cfg.Seal.Previous, p)
	}
	return nil
}

func rewrapCommand(cfg *server.Config) *cobra.Command {
	var fromConfig string
	var inPlace bool
	cmd := &cobra.Command{
		Use:   "rewrap",
		Short: "Move the store to the configured master key (from a key file to a KMS, between KMS keys)",
		Long: `rewrap re-wraps the data key of every sealed value from the previous master
keys (seal.previous, --seal-previous local:FILE, or the seal of --from-config)
to the configured one (seal, --seal). Values are not decrypted: only their
wrapped data keys change. It works in small transactions, is idempotent and
can be run again after an interruption.

Without downtime: restart coffer-server with the new seal and the old key
under seal.previous; it serves at once, opens values under either key, seals
new ones under the new key and rewraps the store in the background, logging
"rewrap complete". This command does the same for a stopped server (the
store is locked while a server runs), and --in-place rewraps values to the
newest version of a Vault Transit key after a rotation.

It prints how many values are sealed under each master key when done; once
none is under an old key, remove it from the configuration.`,
		Example: `  coffer-server rewrap --config new.yaml --from-config old.yaml
  coffer-server rewrap --config transit.yaml --seal-previous local:/var/lib/coffer/master.key
  coffer-server rewrap --config transit.yaml --in-place   # after transit/keys/<key>/rotate`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if fromConfig != "" {
				if err := addFromConfig(cfg, fromConfig); err != nil {
					return err
				}
			}
			log := newLogger(cfg.LogLevel)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			stats, counts, err := server.RewrapStore(ctx, *cfg, inPlace, log)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "rewrapped: %d values moved to the new master key, %d rewrapped in place\n", stats.Moved, stats.InPlace)
			for _, id := range catalog.SortedKeyIDs(counts) {
				fmt.Fprintf(out, "  %d sealed under %s\n", counts[id], id)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&fromConfig, "from-config", "", "the old config file: its seal section names the master key to move the store away from")
	cmd.Flags().BoolVar(&inPlace, "in-place", false, "also rewrap values under the configured Vault Transit key to its newest key version")
	return cmd
}

// addFromConfig adds the seal (and previous keys) of the old config file
// at path to cfg's previous keys.
func addFromConfig(cfg *server.Config, path string) error {
	old := server.Defaults()
	if err := old.LoadFile(path); err != nil {
		return fmt.Errorf("--from-config: %w", err)
	}
	prev := old.Seal
	if prev.Type == "" || prev.Type == server.SealLocal {
		prev.Type = server.SealLocal
		if prev.MasterKeyFile == "" {
			prev.MasterKeyFile = old.MasterKeyFile
		}
		if prev.MasterKeyFile == "" {
			prev.MasterKeyFile = filepath.Join(old.DataDir, "master.key")
		}
	}
	more := prev.Previous
	prev.Previous = nil
	cfg.Seal.Previous = append(cfg.Seal.Previous, prev)
	cfg.Seal.Previous = append(cfg.Seal.Previous, more...)
	return nil
}
