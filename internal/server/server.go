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
	"google.golang.org/grpc/keepalive"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/api"
	"coffer/internal/audit"
	"coffer/internal/authn"
	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/console"
	"coffer/internal/fleet"
	"coffer/internal/identity"
	"coffer/internal/incident"
	"coffer/internal/keystore"
	"coffer/internal/kube"
	"coffer/internal/lease"
	"coffer/internal/linker"
	"coffer/internal/seal"
	"coffer/internal/store"
	"coffer/internal/store/bolt"
	"coffer/internal/store/etcd"
)

// Server is a running coffer-server.
type Server struct {
	cfg    Config
	log    *slog.Logger
	st     store.Backend
	ring   *seal.Ring // the master key (and previous ones during a rewrap)
	audit  *audit.Log
	spool  *audit.Spool
	http   *http.Server
	ln     net.Listener
	grpc   *grpc.Server
	cat    *catalog.Catalog
	Broker *broker.Broker
	links  *linker.Linker // nil without keystores
	ks     keystore.Set
	leases *lease.Manager // nil without issuing upstreams (vault-dynamic)
	iss    keystore.Issuers
	pods   *kube.Pods // nil without a kubeconfig (kube.go)

	// On a shared store (etcd) only:
	feed       *feed         // the store's watch, feeding caches and broker
	presence   *presence     // this server's agents published, the others' read
	health     *storeHealth  // the store's health, pinged in the background
	stopAnchor chan struct{} // closed at shutdown: the audit anchor stops waiting for the store
	id         string        // this server's id among those sharing the store

	handshakeTimeout time.Duration // TLS handshake from accept; tests shorten it
}

const (
	storeFile = "coffer.db"
	auditFile = "audit.log"
	// spoolFile keeps the delivery records queued for the trail against
	// a kill of the server (audit.Spool).
	spoolFile = "audit.spool"
	tokenFile = "admin.token"

	serverCertTTL = 90 * 24 * time.Hour

	// agentStreamWindow is the HTTP/2 window the server gives an agent:
	// gRPC's default, fixed (see grpc.NewServer below).
	agentStreamWindow = 64 << 10

	// deliveryAuditLinger bounds how long a delivery record waits for
	// others before its group commit: a rollout to thousands of containers
	// then costs about one write, fsync and anchor save per 50 ms instead
	// of one per burst of acknowledgements. API records never wait.
	deliveryAuditLinger = 50 * time.Millisecond

	// Timeouts of people's connections (REST over HTTPS), after the TLS
	// handshake (handshakeTimeout). A request has readHeaderTimeout for
	// its headers and readTimeout for all of it, body included (a 1 MiB
	// value needs 17 KiB/s); its response must be written within
	// writeTimeout of its headers. A kept-alive connection may stay idle
	// for idleTimeout between requests. None of these apply to agents,
	// whose connections go to the gRPC server.
	readHeaderTimeout = 10 * time.Second
	readTimeout       = time.Minute
	writeTimeout      = 2 * time.Minute
	idleTimeout       = 2 * time.Minute
	purgeEvery        = time.Minute // how often deleted secrets past their retention are purged
)

// agentKeepalive pings an agent connection idle for a minute and drops it if
// the agent does not answer within 20 s. Agents ping every 30 s (see
// internal/agent): the policy lets them, idle streams included; gRPC's
// default (no more than one ping per 5 minutes) would answer their pings
// with GOAWAY "too_many_pings" and cut idle streams.
var (
	agentKeepalive  = keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}
	agentPingPolicy = keepalive.EnforcementPolicy{MinTime: 15 * time.Second, PermitWithoutStream: true}
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
	s := &Server{cfg: cfg, log: log, handshakeTimeout: handshakeTimeout}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()

	storePath := filepath.Join(cfg.DataDir, storeFile)
	var (
		fresh  bool
		shared *etcd.Backend // the store, when it is shared by several servers
		err    error
	)
	if cfg.Store == StoreEtcd {
		if shared, fresh, err = openEtcd(ctx, cfg, log); err != nil {
			return nil, err
		}
		s.st = shared
	} else {
		_, statErr := os.Stat(storePath)
		fresh = errors.Is(statErr, os.ErrNotExist)
	}
	var sharedStore store.Backend
	if shared != nil {
		sharedStore = shared
	}
	if s.ring, err = openSeal(ctx, cfg, fresh, sharedStore, log); err != nil {
		return nil, err
	}
	if shared == nil {
		// Assigned only on success: a nil *bolt.Backend in the interface would
		// not be nil, and close would call it.
		st, err := bolt.Open(storePath)
		if err != nil {
			return nil, err
		}
		s.st = st
	}
	if err := checkStoreSeal(ctx, s.st, s.ring, storeWhere(cfg), log); err != nil {
		return nil, err
	}
	var b *broker.Broker
	var lk *linker.Linker
	var lm *lease.Manager
	// changed hears of every committed change: from the catalog's hook on
	// bolt, from the store's watch on etcd (every server's changes, this
	// one's too, in commit order).
	changed := func(ch catalog.Change) {
		if lm != nil {
			lm.Changed(ch) // first: the broker asks it which secrets are dynamic
		}
		b.Changed(ch)
		if lk != nil {
			lk.Changed(ch)
		}
	}
	onChange := changed
	if shared != nil {
		onChange = nil
	}
	// The catalog checks the master key against the store (sealing the
	// canary on a new store) before the CA and the audit trail may seal
	// their keys under it.
	cat, err := catalog.Open(ctx, catalog.Config{
		Store: s.st, Key: s.ring, MaxVersions: cfg.MaxVersions, MaxValueSize: cfg.MaxValueSize, Logger: log,
		DeletedRetention: cfg.DeletedRetention,
		OnChange:         onChange,
	})
	if err != nil {
		return nil, err
	}
	s.cat = cat
	ks, intervals, err := openKeystores(ctx, cfg, s.st, s.ring, log)
	if err != nil {
		return nil, err
	}
	s.ks = ks
	var ca *identity.CA
	anchor := audit.StoreAnchor{Store: s.st, Master: s.ring}
	var auditAnchor audit.Anchor = anchor
	if shared != nil {
		if ca, err = joinCluster(ctx, s.st, s.ring, cfg, log); err != nil {
			return nil, err
		}
		if anchor.Server, err = serverID(cfg.DataDir); err != nil {
			return nil, fmt.Errorf("server id: %w", err)
		}
		s.stopAnchor = make(chan struct{})
		auditAnchor = patientAnchor{StoreAnchor: anchor, stop: s.stopAnchor, log: log}
		s.health = &storeHealth{p: shared, log: log}
	} else {
		var created bool
		if ca, created, err = identity.LoadOrCreateCA(cfg.DataDir); err != nil {
			return nil, fmt.Errorf("CA: %w", err)
		}
		if created {
			log.Info("created the Coffer CA", "ca", filepath.Join(cfg.DataDir, "ca.pem"))
		}
	}
	cert, err := ca.LoadOrIssueServerCert(cfg.DataDir, sansFor(cfg), serverCertTTL)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	tokens, err := authn.NewTokens(ctx, s.st)
	if err != nil {
		return nil, err
	}
	fl, err := fleet.Open(ctx, fleet.Config{Store: s.st, CA: ca, CertTTL: cfg.AgentCertTTL})
	if err != nil {
		return nil, err
	}
	// The trail's head and MAC key live in the store, the key sealed under
	// the master key: a trail cut or rewritten while the server was
	// stopped is refused here, before anything else is written. On a
	// shared store each server keeps its own trail, anchored under its id.
	// Delivery records (the broker's AppendAll) wait up to
	// deliveryAuditLinger for more before their group commit.
	s.audit, err = audit.Open(filepath.Join(cfg.DataDir, auditFile), audit.Options{
		Logger: log, Anchor: auditAnchor, Reanchor: cfg.AuditReanchor, Server: anchor.Server,
		Linger: deliveryAuditLinger,
	})
	s.id = anchor.Server
	if err != nil {
		return nil, fmt.Errorf("audit trail: %w", err)
	}
	// Records a killed server had queued and not appended are appended
	// now, before anything else is recorded.
	var recovered int
	if s.spool, recovered, err = audit.OpenSpool(ctx, filepath.Join(cfg.DataDir, spoolFile), s.audit, audit.SpoolOptions{Unpack: broker.UnpackRecord}); err != nil {
		return nil, err
	} else if recovered > 0 {
		log.Warn("audit: appended records the previous run had queued and not appended (it was killed)", "records", recovered)
	}
	tokenPath := filepath.Join(cfg.DataDir, tokenFile)
	if made, err := tokens.Bootstrap(ctx, tokenPath); err != nil {
		return nil, err
	} else if made {
		log.Info("bootstrap admin token written", "path", tokenPath)
		fmt.Fprintf(os.Stderr, "coffer-server: bootstrap admin token written to %s\n", tokenPath)
	}
	if lm, s.iss, err = openLeases(ctx, cfg, s.st, cat, s.audit, anchor.Server, log); err != nil {
		return nil, err
	}
	s.leases = lm
	bcfg := broker.Config{Catalog: cat, Audit: s.audit, Spool: s.spool, Agents: fl, Logger: log}
	kubeRC, err := kubeConfig(cfg.Kubernetes)
	if err != nil {
		return nil, err
	}
	if s.pods, err = openPods(kubeRC, cfg.Kubernetes.Kubeconfig, log); err != nil {
		return nil, err
	} else if s.pods != nil {
		bcfg.Pods = podVerifier{s.pods}
	}
	var dynamic api.DynamicLinker
	if lm != nil {
		bcfg.Leases, dynamic = lm, lm
	}
	b = broker.New(bcfg)
	if lm != nil {
		lm.SetNotify(b.LeaseChanged)
	}
	s.Broker = b
	if err := s.startPods(ctx, b); err != nil {
		return nil, err
	}
	inc, err := incident.Open(ctx, s.st)
	if err != nil {
		return nil, err
	}
	if l := inc.Current(); l != nil {
		log.Warn("a lockdown is in force: writes are refused except by admins", "since", l.Since, "by", l.By, "freeze", l.Freeze)
		b.Freeze(l.Freeze)
	}
	var links api.Linker
	if len(ks) > 0 {
		lk = linker.New(linker.Config{Keystores: ks, Intervals: intervals, Catalog: cat, Audit: s.audit, Logger: log})
		s.links, links = lk, lk
	}
	if shared != nil {
		s.feed = &feed{w: shared, cat: cat, tokens: tokens, fleet: fl, broker: b, changed: changed, log: log}
		s.health.back = b.StoreBack // what could not be read while the store was away
	}

	// No read buffer of gRPC's own (32 KiB by default) and a write buffer
	// of 8 KiB: an agent's stream carries small messages, a server holds
	// thousands of them, and the TLS connection under gRPC buffers the
	// records it reads already. The HTTP/2 windows are fixed at their default size: gRPC's dynamic
	// window would probe the bandwidth with a ping after data comes in, a
	// write each way per acknowledgement.
	// Agents' connections are long-lived: no idle or age limit, only
	// keepalive to find dead peers, and a bound on the HTTP/2 setup.
	gs := grpc.NewServer(grpc.Creds(handshaken{}), grpc.ReadBufferSize(0), grpc.WriteBufferSize(8<<10),
		grpc.InitialWindowSize(agentStreamWindow), grpc.InitialConnWindowSize(agentStreamWindow),
		grpc.ConnectionTimeout(handshakeTimeout), grpc.KeepaliveParams(agentKeepalive), grpc.KeepaliveEnforcementPolicy(agentPingPolicy))
	s.grpc = gs
	cofferv1.RegisterAgentServiceServer(gs, b.Service())
	login, err := ldapLogin(cfg, log)
	if err != nil {
		return nil, err
	}
	var cluster api.Cluster
	if shared != nil {
		s.presence = newPresence(shared.Client(), shared.Root(), anchor.Server, "", b, fl, cfg.Etcd.MaxTxnOps, cfg.Etcd.RequestTimeout, log)
		cluster = s.presence
	}
	attest, err := nodeAttestation(cfg.Kubernetes, kubeRC, log)
	if err != nil {
		return nil, err
	}
	handler := api.New(api.Config{
		Catalog: cat, Tokens: tokens, Fleet: fl, Broker: b, Audit: s.audit, CAPEM: ca.CertPEM,
		MaxValueSize: cfg.MaxValueSize, Logger: log, GRPC: gs,
		Ready: s.ready, AuditServers: s.auditServers, Cluster: cluster,
		Links: links, Incident: inc, Dynamic: dynamic, Login: login,
		Attest: attest,
	})
	tlsCfg := identity.ServerTLSConfig(cert, ca)
	// Reissue the server certificate in place as it nears expiry.
	getCert, err := ca.ServerCertGetter(cfg.DataDir, sansFor(cfg), serverCertTTL, log)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	tlsCfg.Certificates, tlsCfg.GetCertificate = nil, getCert
	tlsCfg.NextProtos = []string{"h2", "http/1.1"}
	resumeAcrossRestarts(tlsCfg, ca) // session tickets across restarts and servers (tickets.go)
	// The web console at /ui/ calls the same API in-process (internal/console).
	ui := console.New(console.Config{API: handler, MaxValueSize: cfg.MaxValueSize, Logger: log})
	var h http.Handler = console.Mount(handler, ui)
	if s.health != nil {
		h = s.health.guard(h)
	}
	s.http = &http.Server{
		Handler:           h,
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, err
	}
	if shared != nil {
		s.presence.addr = advertised(cfg, s.ln.Addr())
		if err := register(ctx, s.st, anchor.Server, s.presence.addr); err != nil {
			s.ln.Close()
			return nil, fmt.Errorf("register the server: %w", err)
		}
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
	errc := make(chan error, 4)
	purgeDone := make(chan struct{})
	go func() { s.cat.PurgeLoop(dctx, purgeEvery); close(purgeDone) }() // deleted secrets past their retention
	go func() { errc <- demux(dctx, s.ln, s.http.TLSConfig, s.handshakeTimeout, people, agents) }()
	go func() { errc <- s.http.Serve(people) }()
	go func() { errc <- s.grpc.Serve(agents) }()
	stopRewrap := s.startRewrap()
	linkDone := make(chan struct{})
	go func() {
		defer close(linkDone)
		if s.links != nil {
			if err := s.links.Run(dctx); err != nil {
				errc <- err
			}
		}
	}()
	bg, stopBG := context.WithCancel(context.Background())
	bgDone := make(chan struct{}, 3)
	if s.feed != nil {
		go func() { s.feed.run(bg); bgDone <- struct{}{} }()
		go func() { s.health.run(bg); bgDone <- struct{}{} }()
		go func() { s.presence.run(bg); bgDone <- struct{}{} }()
	} else {
		bgDone <- struct{}{}
		bgDone <- struct{}{}
		bgDone <- struct{}{}
	}
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	s.ln.Close()
	stopDemux()
	<-purgeDone
	<-linkDone
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
	if s.leases != nil {
		// Leases are not revoked: the containers keep running.
		if cerr := s.leases.Close(cctx); cerr != nil {
			s.log.Error("shutting down", "err", cerr)
		}
	}
	stopRewrap()
	stopBG()
	<-bgDone
	<-bgDone
	<-bgDone
	s.close()
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, grpc.ErrServerStopped) {
		err = nil
	}
	return err
}

func (s *Server) close() {
	if s.pods != nil {
		s.pods.Close()
	}
	if s.ks != nil {
		s.ks.Close()
	}
	if s.iss != nil {
		s.iss.Close()
	}
	if s.stopAnchor != nil {
		close(s.stopAnchor)
	}
	if s.spool != nil {
		s.spool.Close()
	}
	if s.audit != nil {
		s.audit.Close()
	}
	if s.st != nil {
		s.st.Close()
	}
	if s.ring != nil {
		s.ring.Close()
	}
}

func sansFor(cfg Config) []string {
	sans := append([]string{}, cfg.SANs...)
	if host, _, err := net.SplitHostPort(cfg.Listen); err == nil && host != "" {
		sans = append(sans, host)
	}
	return sans
}

// ready is /readyz: the store serves (on etcd: a quorum read now).
func (s *Server) ready(ctx context.Context) error {
	if s.health != nil {
		return s.health.check(ctx)
	}
	return s.st.View(ctx, func(store.Tx) error { return nil })
}

// auditServers lists the audit chains of the servers sharing the store;
// nil for a single server.
func (s *Server) auditServers(ctx context.Context) ([]api.AuditServer, error) {
	if s.feed == nil {
		return []api.AuditServer{{Address: s.Addr(), Head: s.audit.Head(), Self: true}}, nil
	}
	return auditServers(ctx, s.st, s.id, s.audit.Head())
}
