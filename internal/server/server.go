// Package server assembles coffer-server: data dir, master key, CA, store,
// catalog, tokens, audit trail, fleet and broker behind one TLS 1.3
// listener that serves the REST API to people and gRPC to agents.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/api"
	"coffer/internal/audit"
	"coffer/internal/authn"
	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/fleet"
	"coffer/internal/identity"
	"coffer/internal/seal"
	"coffer/internal/store"
	"coffer/internal/store/bolt"
)

// Server is a running coffer-server.
type Server struct {
	cfg    Config
	log    *slog.Logger
	st     store.Backend
	key    *seal.LocalKey
	audit  *audit.Log
	http   *http.Server
	ln     net.Listener
	grpc   *grpc.Server
	cat    *catalog.Catalog
	Broker *broker.Broker
}

const (
	storeFile = "coffer.db"
	auditFile = "audit.log"
	tokenFile = "admin.token"

	serverCertTTL = 90 * 24 * time.Hour
	purgeEvery    = time.Minute // how often deleted secrets past their retention are purged
)

// New initializes or opens the data dir and prepares the listener. It never
// destroys data: a corrupt store or a wrong master key is an error.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if cfg.MasterKeyFile == "" {
		cfg.MasterKeyFile = filepath.Join(cfg.DataDir, "master.key")
	}
	s := &Server{cfg: cfg, log: log}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()

	storePath := filepath.Join(cfg.DataDir, storeFile)
	_, statErr := os.Stat(storePath)
	fresh := errors.Is(statErr, os.ErrNotExist)
	var err error
	s.key, err = loadKey(cfg.MasterKeyFile, fresh, log)
	if err != nil {
		return nil, err
	}
	if s.st, err = bolt.Open(storePath); err != nil {
		return nil, err
	}
	ca, created, err := identity.LoadOrCreateCA(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	if created {
		log.Info("created the Coffer CA", "ca", filepath.Join(cfg.DataDir, "ca.pem"))
	}
	cert, err := ca.LoadOrIssueServerCert(cfg.DataDir, sansFor(cfg), serverCertTTL)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	if s.audit, err = audit.Open(filepath.Join(cfg.DataDir, auditFile), audit.Options{}); err != nil {
		return nil, fmt.Errorf("audit trail: %w", err)
	}
	tokens, err := authn.NewTokens(ctx, s.st)
	if err != nil {
		return nil, err
	}
	tokenPath := filepath.Join(cfg.DataDir, tokenFile)
	if made, err := tokens.Bootstrap(ctx, tokenPath); err != nil {
		return nil, err
	} else if made {
		log.Info("bootstrap admin token written", "path", tokenPath)
		fmt.Fprintf(os.Stderr, "coffer-server: bootstrap admin token written to %s\n", tokenPath)
	}
	fl, err := fleet.Open(ctx, fleet.Config{Store: s.st, CA: ca, CertTTL: cfg.AgentCertTTL})
	if err != nil {
		return nil, err
	}
	var b *broker.Broker
	cat, err := catalog.Open(ctx, catalog.Config{
		Store: s.st, Key: s.key, MaxVersions: cfg.MaxVersions, MaxValueSize: cfg.MaxValueSize, Logger: log,
		DeletedRetention: cfg.DeletedRetention,
		OnChange:         func(ch catalog.Change) { b.Changed(ch) },
	})
	if err != nil {
		return nil, err
	}
	s.cat = cat
	b = broker.New(broker.Config{Catalog: cat, Audit: s.audit, Agents: fl, Logger: log})
	s.Broker = b

	// Per-connection buffers of 8 KiB instead of 32 KiB: an agent's stream
	// carries small messages, and a server holds thousands of them.
	gs := grpc.NewServer(grpc.Creds(handshaken{}), grpc.ReadBufferSize(8<<10), grpc.WriteBufferSize(8<<10))
	s.grpc = gs
	cofferv1.RegisterAgentServiceServer(gs, b.Service())
	handler := api.New(api.Config{
		Catalog: cat, Tokens: tokens, Fleet: fl, Broker: b, Audit: s.audit, CAPEM: ca.CertPEM,
		MaxValueSize: cfg.MaxValueSize, Logger: log, GRPC: gs,
		Ready: func(ctx context.Context) error { return s.st.View(ctx, func(store.Tx) error { return nil }) },
	})
	tlsCfg := identity.ServerTLSConfig(cert, ca)
	// Reissue the server certificate in place as it nears expiry.
	getCert, err := ca.ServerCertGetter(cfg.DataDir, sansFor(cfg), serverCertTTL, log)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	tlsCfg.Certificates, tlsCfg.GetCertificate = nil, getCert
	tlsCfg.NextProtos = []string{"h2", "http/1.1"}
	s.http = &http.Server{
		Handler:           handler,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	s.log.Info("coffer-server listening", "addr", s.Addr(), "data_dir", s.cfg.DataDir)
	people, agents := newChanListener(s.ln.Addr()), newChanListener(s.ln.Addr())
	dctx, stopDemux := context.WithCancel(context.Background())
	defer stopDemux()
	errc := make(chan error, 3)
	purgeDone := make(chan struct{})
	go func() { s.cat.PurgeLoop(dctx, purgeEvery); close(purgeDone) }() // deleted secrets past their retention
	go func() { errc <- demux(dctx, s.ln, s.http.TLSConfig, people, agents) }()
	go func() { errc <- s.http.Serve(people) }()
	go func() { errc <- s.grpc.Serve(agents) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	s.ln.Close()
	stopDemux()
	<-purgeDone
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Agent streams never end by themselves: close them after a grace period.
	go func() { time.Sleep(2 * time.Second); s.http.Close(); s.grpc.Stop() }()
	_ = s.http.Shutdown(sctx)
	s.grpc.Stop()
	// Delivery records still queued go into the audit trail before it closes.
	cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cerr := s.Broker.Close(cctx); cerr != nil {
		s.log.Error("shutting down", "err", cerr)
	}
	s.close()
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}

func (s *Server) close() {
	if s.audit != nil {
		s.audit.Close()
	}
	if s.st != nil {
		s.st.Close()
	}
	if s.key != nil {
		s.key.Close()
	}
}

func loadKey(path string, fresh bool, log *slog.Logger) (*seal.LocalKey, error) {
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		k, err := seal.LoadKeyFile(path)
		if err != nil {
			return nil, fmt.Errorf("master key: %w", err)
		}
		return k, nil
	}
	if !fresh {
		return nil, fmt.Errorf("master key %s is missing but the data dir holds a store sealed with one: restore the key file (or point --master-key-file at it); refusing to create a new key", path)
	}
	k, err := seal.CreateKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	log.Info("created master key", "path", path)
	return k, nil
}

func sansFor(cfg Config) []string {
	sans := append([]string{}, cfg.SANs...)
	if host, _, err := net.SplitHostPort(cfg.Listen); err == nil && host != "" {
		sans = append(sans, host)
	}
	return sans
}
