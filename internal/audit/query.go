package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Filter selects records. Empty fields select everything.
type Filter struct {
	Actor  string // exact
	Action string // exact, or a prefix when it ends in '*' ("delivery.*")
	Object string // exact, or a prefix when it ends in '*' ("secret:payments/*")
	Secret string // records about this secret: Object "secret:<name>" or Details["secret"] == name
	Result string // exact ("ok", "denied", ...)
	Since  time.Time
	Until  time.Time // exclusive
	After  uint64    // only records with a larger seq (following a trail)
	Before uint64    // only records with a smaller seq (paging back); 0: no bound
	// Keep, if set, is one more condition, applied like the others, so
	// that Limit counts only records that pass it (e.g. a token's scope).
	Keep  func(*Event) bool
	Limit int // the newest Limit records that pass; 0: all
}

// Match reports whether e passes f (Limit aside).
func (f *Filter) Match(e *Event) bool {
	switch {
	case f.Actor != "" && e.Actor != f.Actor,
		!matchPattern(f.Action, e.Action),
		!matchPattern(f.Object, e.Object),
		f.Result != "" && e.Result != f.Result,
		e.Seq <= f.After,
		f.Before != 0 && e.Seq >= f.Before,
		!f.Since.IsZero() && e.Time.Before(f.Since),
		!f.Until.IsZero() && !e.Time.Before(f.Until):
		return false
	}
	if f.Secret != "" && e.Object != "secret:"+f.Secret && e.Details["secret"] != f.Secret {
		return false
	}
	return f.Keep == nil || f.Keep(e)
}

// matchPattern reports whether v is pat, or starts with pat's prefix when
// pat ends in '*'; "" matches everything.
func matchPattern(pat, v string) bool {
	if pat == "" {
		return true
	}
	if prefix, ok := strings.CutSuffix(pat, "*"); ok {
		return strings.HasPrefix(v, prefix)
	}
	return v == pat
}

// Query returns the durable records that pass f, in seq order: all of
// them, or the newest f.Limit. It reads the file; it does not verify the
// chain (Verify does).
func (l *Log) Query(ctx context.Context, f Filter) ([]Event, error) {
	if f.Limit < 0 {
		return nil, fmt.Errorf("audit: query: negative limit %d", f.Limit)
	}
	r, _, err := l.durable()
	if err != nil {
		return nil, err
	}
	var (
		out  []Event
		ring int // with a Limit, out is a ring buffer and ring its oldest slot
	)
	br := bufio.NewReaderSize(r, 1<<16)
	for n := 1; ; n++ {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		raw, err := readLine(br)
		if len(raw) == 0 && err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("audit: query: line %d: %w", n, err)
		}
		var e Event
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("audit: query: line %d: %w", n, err)
		}
		if !f.Match(&e) {
			continue
		}
		switch {
		case f.Limit == 0 || len(out) < f.Limit:
			out = append(out, e)
		default:
			out[ring] = e
			ring = (ring + 1) % f.Limit
		}
	}
	if ring > 0 {
		out = slices.Concat(out[ring:], out[:ring])
	}
	return out, nil
}
