package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"coffer/internal/audit"
	"coffer/internal/store"
)

// Health of a shared store (etcd), checked in the background.
const (
	pingEvery   = 500 * time.Millisecond
	pingTimeout = time.Second
)

// storeHealth pings a shared store and remembers the last answer: the API
// refuses requests at once with 503 while the store is away, instead of
// letting each wait for etcd's request timeout, and the agents' streams go
// on with what the broker holds.
type storeHealth struct {
	p   store.Pinger
	log *slog.Logger
	err atomic.Pointer[error] // nil: healthy
	// back is called when the store serves again after an outage.
	back func()
}

func (h *storeHealth) check(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	err := h.p.Ping(pctx)
	if err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrUnavailable) {
		err = fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

// run pings until ctx ends.
func (h *storeHealth) run(ctx context.Context) {
	t := time.NewTicker(pingEvery)
	defer t.Stop()
	for {
		err := h.check(ctx)
		if ctx.Err() != nil {
			return
		}
		was := h.err.Load()
		switch {
		case err != nil && was == nil:
			h.log.Error("store unavailable: refusing API requests until it is back; connected agents keep their secrets", "err", err)
			h.err.Store(&err)
		case err != nil:
			h.err.Store(&err)
		case was != nil:
			h.log.Info("store available again")
			h.err.Store(nil)
			if h.back != nil {
				h.back()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// down returns the last ping's error, nil while the store serves.
func (h *storeHealth) down() error {
	if h == nil {
		return nil
	}
	if p := h.err.Load(); p != nil {
		return *p
	}
	return nil
}

// guard answers the REST API's requests (not agents' gRPC, not /healthz or
// /readyz) with 503 while the store is away: writes cannot be stored, and
// every request's audit record waits on the store.
func (h *storeHealth) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h.down(); err != nil && strings.HasPrefix(r.URL.Path, "/v1/") &&
			!strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "{\n  \"error\": %q\n}\n", "the store is unavailable ("+err.Error()+"): this server refuses requests until it is back; connected agents keep their secrets")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// patientAnchor is an audit Anchor on a shared store that waits for the
// store to come back instead of failing: the records are already durable
// in the server's own file, the head only lags, and a failed Save would
// stop the trail (and with it the API) until a restart. It gives up when
// stop is closed, at shutdown.
type patientAnchor struct {
	audit.StoreAnchor
	stop <-chan struct{}
	log  *slog.Logger
}

func (a patientAnchor) Save(ctx context.Context, key []byte, m audit.Mark) error {
	logged := false
	for {
		err := a.StoreAnchor.Save(ctx, key, m)
		if err == nil || !errors.Is(err, store.ErrUnavailable) {
			return err
		}
		if !logged {
			a.log.Warn("audit head cannot be anchored while the store is away; retrying (records are in the local trail)", "err", err)
			logged = true
		}
		select {
		case <-a.stop:
			return err
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}
