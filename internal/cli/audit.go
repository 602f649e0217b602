package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"coffer/internal/audit"
)

func newAuditCmd(c *conn) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Query and verify the tamper-evident audit trail"}
	cmd.AddCommand(newAuditLsCmd(c), newAuditVerifyCmd(c), newAuditHeadCmd(c))
	return cmd
}

func newAuditLsCmd(c *conn) *cobra.Command {
	var o output
	var secretName, actor, action, object, result, since, until string
	var limit int
	var before uint64
	var follow bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List audit records (newest last), filtered; --follow for new ones as they come",
		Long: `List audit records in seq order. Filters combine; --action and --object take
an exact name or a prefix ending in '*' (delivery.*, secret:payments/*). A
scoped token sees only records about secrets within its scope, and --limit
counts only those. Page back through a long trail with --before SEQ (the
smallest seq of the previous page).

With several servers on one etcd store, each server keeps its own chain
(records carry the server's id): ls asks every server for its records and
merges them in time order, --limit counting over all of them; a server it
cannot reach is named and the exit code is 1. --before pages each chain by
its own seq; --follow follows the server asked only.`,
		Example: `  coffer audit ls --since 24h
  coffer audit ls --secret payments/db-password -o json
  coffer audit ls --actor agent:node-1 --action 'delivery.*' --limit 50
  coffer audit ls --result denied --since 2026-05-01T00:00:00Z --until 2026-05-02T00:00:00Z
  coffer audit ls --limit 100 --before 5120      # the 100 records before seq 5120
  coffer audit ls --follow --action secret.put   # new records until Ctrl-C`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if limit < 0 {
				return usageError(fmt.Errorf("--limit %d: use 0 (all) or a positive number", limit))
			}
			if follow && before != 0 {
				return usageError(errors.New("--follow and --before do not combine: --follow shows new records"))
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"secret": secretName, "actor": actor, "action": action, "object": object,
				"result": result, "since": since, "until": until} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if limit > 0 {
				q.Set("limit", fmt.Sprint(limit))
			}
			if before > 0 {
				q.Set("before", fmt.Sprint(before))
			}
			var evs []audit.Event
			var chains []auditServer
			if !follow {
				if chains, err = auditChains(cl); err != nil {
					return err
				}
			}
			var missing error
			if len(chains) > 0 {
				evs, missing = mergedAudit(cl, chains, q, limit)
			} else if err := cl.do("GET", "/v1/audit?"+q.Encode(), nil, &evs); err != nil {
				return err
			}
			if !follow {
				rows := [][]string{}
				for _, e := range evs {
					rows = append(rows, auditRow(e))
				}
				if err := o.print(cmd.OutOrStdout(), evs, auditHeader, rows); err != nil {
					return err
				}
				return missing
			}
			return followAudit(cmd, cl, q, evs, o.format)
		},
	}
	cmd.Flags().StringVar(&secretName, "secret", "", "records about this secret")
	cmd.Flags().StringVar(&actor, "actor", "", "records by this actor (token:ID, agent:NAME)")
	cmd.Flags().StringVar(&action, "action", "", "records of this action, or actions with this prefix ending in '*' (secret.put, delivery.*)")
	cmd.Flags().StringVar(&object, "object", "", "records about this object, or a prefix ending in '*' (container:ID, secret:payments/*)")
	cmd.Flags().StringVar(&result, "result", "", "records with this result (ok, denied, error, invalid, unauthenticated, conflict)")
	cmd.Flags().StringVar(&since, "since", "", "records since an RFC 3339 time or a duration ago (24h)")
	cmd.Flags().StringVar(&until, "until", "", "records before an RFC 3339 time or a duration ago (1h)")
	cmd.Flags().IntVar(&limit, "limit", 0, "at most this many, the newest (0: all)")
	cmd.Flags().Uint64Var(&before, "before", 0, "only records with a smaller seq (to page back)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "after the records so far, print new ones as they are written, until interrupted")
	o.flag(cmd)
	return cmd
}

var auditHeader = []string{"SEQ", "TIME", "ACTOR", "ACTION", "OBJECT", "RESULT", "SOURCE"}

func auditRow(e audit.Event) []string {
	return []string{fmt.Sprint(e.Seq), e.Time.Format(time.RFC3339), e.Actor, e.Action, dash(e.Object), e.Result, dash(e.Source)}
}

// followAudit prints evs, then polls for records after the last one every
// second until the command's context ends. Table output prints one
// tab-separated line per record (header first); JSON prints one object per
// line, so that the stream can be piped.
func followAudit(cmd *cobra.Command, cl *client, q url.Values, evs []audit.Event, format string) error {
	w := cmd.OutOrStdout()
	q.Del("limit")
	var last uint64
	emit := func(evs []audit.Event) error {
		for _, e := range evs {
			last = max(last, e.Seq)
			if format == "json" {
				b, err := json.Marshal(e)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "%s\n", b)
				continue
			}
			fmt.Fprintln(w, strings.Join(auditRow(e), "\t"))
		}
		return nil
	}
	if format != "json" {
		fmt.Fprintln(w, strings.Join(auditHeader, "\t"))
	}
	if err := emit(evs); err != nil {
		return err
	}
	ctx := cmd.Context()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		q.Set("after", fmt.Sprint(last))
		var more []audit.Event
		if err := cl.do("GET", "/v1/audit?"+q.Encode(), nil, &more); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := emit(more); err != nil {
			return err
		}
	}
}

func newAuditHeadCmd(c *conn) *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:   "head",
		Short: "Print the audit trail's head (seq and hash of the last record), to keep elsewhere",
		Long: `Print the seq and hash of the audit trail's last durable record. Keep it
somewhere the server cannot write (a ticket, another host, a log shipper):
later, coffer audit verify --head checks that the trail still contains that
record, and so that nothing up to it was cut or rewritten, even by someone
who could rewrite the whole data dir.`,
		Example: `  coffer audit head
  coffer audit head -o json > /secure/coffer-head-$(date +%F).json
  coffer audit verify --head /secure/coffer-head-2026-05-01.json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			var h audit.Head
			if err := cl.do("GET", "/v1/audit/head", nil, &h); err != nil {
				return err
			}
			return o.print(cmd.OutOrStdout(), h, []string{"SEQ", "HASH"}, [][]string{{fmt.Sprint(h.Seq), h.Hash}})
		},
	}
	o.flag(cmd)
	return cmd
}

// headArg reads --head: a file written by coffer audit head (either
// output), or SEQ:HASH.
func headArg(v string) (audit.Head, error) {
	if fi, err := os.Stat(v); err == nil && fi.Mode().IsRegular() {
		f, err := os.Open(v)
		if err != nil {
			return audit.Head{}, usageError(fmt.Errorf("--head %s: %w", v, err))
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, 4<<10))
		if err != nil {
			return audit.Head{}, usageError(fmt.Errorf("--head %s: %w", v, err))
		}
		h, err := audit.ParseHead(tableHead(string(b)))
		if err != nil {
			return audit.Head{}, usageError(fmt.Errorf("--head %s: %w", v, err))
		}
		return h, nil
	}
	h, err := audit.ParseHead(v)
	if err != nil {
		return audit.Head{}, usageError(fmt.Errorf("--head %q: neither a file nor SEQ:HASH: %w", v, err))
	}
	return h, nil
}

// tableHead turns coffer audit head's table output ("SEQ  HASH" and one
// row) into SEQ:HASH; other text is returned as it is.
func tableHead(s string) string {
	f := strings.Fields(s)
	if len(f) == 4 && f[0] == "SEQ" && f[1] == "HASH" {
		return f[2] + ":" + f[3]
	}
	return s
}

func newAuditVerifyCmd(c *conn) *cobra.Command {
	var file, head string
	var o output
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit trail's hash chain: any edited, removed or reordered record fails",
		Long: `Check the audit trail's hash chain. Without --file the server checks its
live trail, the MAC of every record written since MACs began (which a
rewrite of the whole file without the server's audit key cannot forge), and
that it ends at the server's head. With --file, coffer checks an audit.log
file (a copy or a backup) locally: the chain only, since the MAC key stays
sealed in the server's store.

With --head (SEQ:HASH, or a file written by coffer audit head), the trail
must also still contain that record: a head kept elsewhere catches a cut
tail or a rewritten history up to it. Exit 0 when intact, 1 when tampered.

-o json prints {"ok", "records", "head", "error"} (the server's answer, or
the same object for --file) on stdout, also when the check fails.

With several servers on one etcd store (without --head), every server's
chain is verified by that server, up to the head its last commit anchored
in etcd; -o json then prints one such object per chain, with "server". A
server that cannot be reached, or whose chain was lost with its data dir,
fails the check. --head checks the chain of the server asked.`,
		Example: `  coffer audit verify
  coffer audit verify --head 1042:9c1d0f5e...
  coffer audit verify --head /secure/coffer-head-2026-05-01.json
  coffer audit verify --file /backup/coffer-data/audit.log --head 1042:9c1d0f5e...
  coffer audit verify -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			var through *audit.Head
			if head != "" {
				h, err := headArg(head)
				if err != nil {
					return err
				}
				through = &h
			}
			if file != "" {
				f, err := os.Open(file)
				if err != nil {
					return err
				}
				defer f.Close()
				r := verifyResult{OK: true}
				h, err := audit.VerifyWith(f, audit.VerifyOptions{Through: through})
				if err != nil {
					var ce *audit.ChainError
					if !errors.As(err, &ce) {
						return fmt.Errorf("%s: %w", file, err)
					}
					r = verifyResult{Records: h.Seq, Error: fmt.Sprintf("%s: %v", file, err)}
				} else {
					r.Records, r.Head = h.Seq, h.Hash
				}
				return r.report(w, &o)
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			if through == nil {
				chains, err := auditChains(cl)
				if err != nil {
					return err
				}
				if len(chains) > 0 {
					return verifyChains(w, &o, cl, chains)
				}
			}
			path := "/v1/audit/verify"
			if through != nil {
				path += "?head=" + url.QueryEscape(through.String())
			}
			var r verifyResult
			if err := cl.do("GET", path, nil, &r); err != nil {
				return err
			}
			return r.report(w, &o)
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "verify this audit.log file locally instead of asking the server")
	cmd.Flags().StringVar(&head, "head", "", "the trail must contain this head: SEQ:HASH, or a file written by coffer audit head")
	o.flag(cmd)
	return cmd
}

// verifyResult is GET /v1/audit/verify's answer.
type verifyResult struct {
	Server  string `json:"server,omitempty"` // the chain's server, with several
	OK      bool   `json:"ok"`
	Records uint64 `json:"records"`
	Head    string `json:"head"`
	Error   string `json:"error,omitempty"`
}

// report prints the verdict and fails when the chain is broken.
func (r verifyResult) report(w io.Writer, o *output) error {
	if o.structured() {
		if err := o.print(w, r, nil, nil); err != nil {
			return err
		}
	}
	if !r.OK {
		return errors.New(r.Error)
	}
	if !o.structured() {
		fmt.Fprintf(w, "ok: %d records, head %d:%s\n", r.Records, r.Records, r.Head)
	}
	return nil
}
