package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
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
	var file, head string
	var o output
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check the audit trail's hash chain: any edited, removed or reordered record fails",
		Long: `Check the audit trail's hash chain. Without --file the server checks its
live trail; with --file, coffer checks an audit.log file (a copy or a backup)
locally. Exit 0 when intact, 1 when tampered.

A chain proves order and integrity, but whoever rewrites the whole file can
recompute every hash, and removing the newest records leaves a valid chain.
Keep the head it prints (SEQ:HASH) somewhere else; --head SEQ:HASH then
checks that a later copy still holds that record unchanged.

-o json prints {"ok", "records", "head", "error"} (the server's answer, or
the same object for --file) on stdout, also when the check fails.`,
		Example: `  coffer audit verify
  coffer audit verify --file /backup/coffer-data/audit.log
  coffer audit verify --file audit.log --head 1042:9c1d0f5e3b...
  coffer audit verify -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			w := cmd.OutOrStdout()
			var want *audit.Head
			if head != "" {
				if file == "" {
					return usageError(errors.New("--head needs --file (the server checks its live trail against its own head)"))
				}
				h, err := parseHead(head)
				if err != nil {
					return usageError(err)
				}
				want = &h
			}
			if file != "" {
				r := verifyResult{OK: true}
				h, err := verifyFile(file, want)
				if err != nil {
					var ce *audit.ChainError
					if !errors.As(err, &ce) {
						return err
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
			var r verifyResult
			if err := cl.do("GET", "/v1/audit/verify", nil, &r); err != nil {
				return err
			}
			return r.report(w, &o)
		},
	}
	cmd.Flags().StringVar(&file, "file", "", "verify this audit.log file locally instead of asking the server")
	cmd.Flags().StringVar(&head, "head", "", "with --file: a head saved earlier (SEQ:HASH, as verify prints it) that the file must still hold")
	o.flag(cmd)
	return cmd
}

// verifyResult is GET /v1/audit/verify's answer.
type verifyResult struct {
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

// parseHead reads SEQ:HASH.
func parseHead(s string) (audit.Head, error) {
	seq, hash, ok := strings.Cut(strings.TrimSpace(s), ":")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok || err != nil || n == 0 || len(hash) != 64 || strings.Trim(strings.ToLower(hash), "0123456789abcdef") != "" {
		return audit.Head{}, fmt.Errorf("--head %q: want SEQ:HASH, e.g. 1042:<64 hex digits>, as audit verify prints it", s)
	}
	return audit.Head{Seq: n, Hash: strings.ToLower(hash)}, nil
}

// verifyFile checks the chain in path and, if want is given, that its
// record want.Seq is want: the trail may have grown since, but not lost or
// changed that record.
func verifyFile(path string, want *audit.Head) (audit.Head, error) {
	f, err := os.Open(path)
	if err != nil {
		return audit.Head{}, err
	}
	defer f.Close()
	h, err := audit.Verify(f, nil)
	if err != nil || want == nil || h == *want {
		return h, err
	}
	if h.Seq < want.Seq {
		return h, &audit.ChainError{Line: int(h.Seq), Seq: h.Seq, Err: audit.ErrTampered,
			Reason: fmt.Sprintf("the chain ends at seq %d, before the saved head's seq %d: records removed from the end", h.Seq, want.Seq)}
	}
	// Record n is line n of an intact chain: check the chain up to it.
	end, err := lineEnd(f, want.Seq)
	if err != nil {
		return h, err
	}
	if _, err := audit.Verify(io.NewSectionReader(f, 0, end), want); err != nil {
		return h, err
	}
	return h, nil
}

// lineEnd returns the offset just after line n of f.
func lineEnd(f *os.File, n uint64) (int64, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	br := bufio.NewReaderSize(f, 1<<16)
	var off int64
	for ; n > 0; n-- {
		line, err := br.ReadSlice('\n')
		for err == bufio.ErrBufferFull {
			off += int64(len(line))
			line, err = br.ReadSlice('\n')
		}
		if err != nil {
			return 0, err
		}
		off += int64(len(line))
	}
	return off, nil
}
