package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"coffer/internal/policy"

	"coffer/internal/secret"
)

func newRolloutCmd(c *conn) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Follow a secret's rollout to the running containers",
	}
	cmd.AddCommand(newRolloutStatusCmd(c))
	return cmd
}

func newRolloutStatusCmd(c *conn) *cobra.Command {
	var version uint64
	var timeout, interval time.Duration
	cmd := &cobra.Command{
		Use:   "status SECRET [--version N] [--timeout 60s]",
		Short: "Wait until every running container bound to a secret holds its current (or a given) version",
		Long: `Wait until every running container bound to SECRET has acknowledged its
current version (or, with --version N, version N or a newer one), showing
progress: one updating line on a terminal, a line per change otherwise.

It exits 0 once they all hold it (at once if no running container is bound
to the secret), and 1 after --timeout, listing the containers that lag
behind: agent, container, and the version each holds. A secret that does
not exist, or a --version it does not have yet, is an error at once.`,
		Example: `  coffer secret put payments/db-password < new-password.txt
  coffer rollout status payments/db-password
  coffer rollout status payments/db-password --version 7 --timeout 2m`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := secret.ValidateName(name); err != nil {
				return usageError(err)
			}
			if timeout <= 0 {
				return usageError(fmt.Errorf("--timeout %s: must be positive", timeout))
			}
			if interval < 100*time.Millisecond {
				return usageError(fmt.Errorf("--interval %s: at least 100ms", interval))
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmdContext(cmd), os.Interrupt)
			defer stop()
			w := cmd.OutOrStdout()
			tty := isTerminal(w)
			start := time.Now()
			deadline := start.Add(timeout)
			var last string
			for {
				var m secretMeta
				if err := cl.do("GET", "/v1/secrets/"+escapePath(name), nil, &m); err != nil {
					if tty && last != "" {
						fmt.Fprintln(w)
					}
					return err
				}
				want := version
				if want == 0 {
					want = m.Current
				} else if want > m.Current {
					return fmt.Errorf("secret %s has no version %d (the current version is %d)", name, want, m.Current)
				}
				var lag []holder
				for _, h := range m.Holders {
					if !holds(h, want, version != 0) {
						lag = append(lag, h)
					}
				}
				n := len(m.Holders)
				elapsed := time.Since(start).Round(100 * time.Millisecond)
				if n == 0 {
					fmt.Fprintf(w, "%s: no running container is bound to it; nothing to wait for\n", name)
					return nil
				}
				line := fmt.Sprintf("%s version %d: %d of %d containers hold it", name, want, n-len(lag), n)
				if len(lag) == 0 {
					if tty {
						io.WriteString(w, "\r\033[K")
					}
					fmt.Fprintf(w, "%s (%s)\n", line, elapsed)
					return nil
				}
				if time.Now().After(deadline) {
					if tty {
						fmt.Fprintln(w)
					}
					return laggards(name, want, timeout, lag, n)
				}
				switch {
				case tty:
					fmt.Fprintf(w, "\r\033[K%s, waiting (%s)", line, elapsed)
				case line != last:
					fmt.Fprintln(w, line+", waiting")
				}
				last = line
				select {
				case <-ctx.Done():
					if tty {
						fmt.Fprintln(w)
					}
					return errors.New("interrupted")
				case <-time.After(min(interval, time.Until(deadline)+time.Millisecond)):
				}
			}
		},
	}
	cmd.Flags().Uint64Var(&version, "version", 0, "wait for this version (or a newer one) instead of the current version")
	cmd.Flags().DurationVar(&timeout, "timeout", 60*time.Second, "give up after this long (exit 1, listing the containers behind)")
	cmd.Flags().DurationVar(&interval, "interval", 500*time.Millisecond, "how often to ask the server (at least 100ms)")
	return cmd
}

// holds reports whether h holds version want: exactly the current version
// and nothing pending, or, when a version was given (atLeast), that
// version or a newer one.
func holds(h holder, want uint64, atLeast bool) bool {
	if h.Process != nil && h.Process.State == "restart-pending" {
		return false // the file is there, its process not yet
	}
	if h.Rotation == policy.RotationNone && h.Version != 0 && !h.Pending {
		return true // it keeps the version it was first given, by contract
	}
	if atLeast {
		return h.Version >= want
	}
	return h.Version == want && !h.Pending
}

// laggards is the error of a rollout that timed out.
func laggards(name string, want uint64, timeout time.Duration, lag []holder, n int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "timed out after %s: %d of %d containers do not hold %s version %d:\n", timeout, len(lag), n, name, want)
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  AGENT\tCONTAINER\tID\tHOLDS")
	for _, h := range lag {
		held := "nothing yet"
		if h.Version != 0 {
			held = fmt.Sprintf("version %d", h.Version)
		}
		switch {
		case h.Process != nil && h.Process.State == "restart-pending":
			held += processNote(h)
		case h.Pending:
			held += " (newer state sent, not acknowledged)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", h.Agent, h.ContainerName, short(h.ContainerID), held)
	}
	tw.Flush()
	return errors.New(strings.TrimSuffix(b.String(), "\n"))
}
