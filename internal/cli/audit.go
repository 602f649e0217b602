package cli

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/spf13/cobra"

	"coffer/internal/audit"
)

func newAuditCmd(c *conn) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Query and verify the tamper-evident audit trail"}
	cmd.AddCommand(newAuditLsCmd(c), newAuditVerifyCmd(c))
	return cmd
}

func newAuditLsCmd(c *conn) *cobra.Command {
	var o output
	var secretName, actor, action, since string
	var limit int
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List audit records",
		Example: `  coffer audit ls --since 24h
  coffer audit ls --secret payments/db-password -o json
  coffer audit ls --actor agent:node-1 --action delivery.rotate --limit 50`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"secret": secretName, "actor": actor, "action": action, "since": since} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if limit > 0 {
				q.Set("limit", fmt.Sprint(limit))
			}
			var evs []audit.Event
			if err := cl.do("GET", "/v1/audit?"+q.Encode(), nil, &evs); err != nil {
				return err
			}
			rows := [][]string{}
			for _, e := range evs {
				rows = append(rows, []string{fmt.Sprint(e.Seq), e.Time.Format(time.RFC3339), e.Actor, e.Action, dash(e.Object), e.Result, dash(e.Source)})
			}
			return o.print(cmd.OutOrStdout(), evs, []string{"SEQ", "TIME", "ACTOR", "ACTION", "OBJECT", "RESULT", "SOURCE"}, rows)
		},
	}
	cmd.Flags().StringVar(&secretName, "secret", "", "records about this secret")
	cmd.Flags().StringVar(&actor, "actor", "", "records by this actor (token:ID, agent:NAME)")
	cmd.Flags().StringVar(&action, "action", "", "records of this action (secret.put, delivery.apply, ...)")
	cmd.Flags().StringVar(&since, "since", "", "records since an RFC 3339 time or a duration ago (24h)")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many, the newest")
	o.flag(cmd)
	return cmd
}

func newAuditVerifyCmd(c *conn) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit trail's hash chain: any edited, removed or reordered record fails",
		Long: `Check the audit trail's hash chain. Without --file the server checks its
live trail; with --file, coffer checks an audit.log file (a copy or a backup)
locally. Exit 0 when intact, 1 when tampered.`,
		Example: "  coffer audit verify\n  coffer audit verify --file /backup/coffer-data/audit.log",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			if file != "" {
				f, err := os.Open(file)
				if err != nil {
					return err
				}
				defer f.Close()
				h, err := audit.Verify(f, nil)
				if err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
				fmt.Fprintf(w, "ok: %d records, head %s\n", h.Seq, h.Hash)
				return nil
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			var r struct {
				OK      bool   `json:"ok"`
				Records uint64 `json:"records"`
				Head    string `json:"head"`
				Error   string `json:"error"`
			}
			if err := cl.do("GET", "/v1/audit/verify", nil, &r); err != nil {
				return err
			}
			if !r.OK {
				return errors.New(r.Error)
			}
			fmt.Fprintf(w, "ok: %d records, head %s\n", r.Records, r.Head)
			return nil
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "verify this audit.log file locally instead of asking the server")
	return cmd
}
