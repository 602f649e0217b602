package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/identity"
	"coffer/internal/server"
)

// serveCmd runs coffer-server's code (package server, as cmd/coffer-server
// does) with profiling added: SIGUSR1 starts a CPU profile, SIGUSR2 stops it
// and writes a heap profile. The fan-out mode uses it with --profile-server
// to profile the server alone, in its own process, over the measured rounds.
func serveCmd(ctx context.Context) *cobra.Command {
	cfg := server.Defaults()
	var cpuFile, heapFile, agentListen string
	cmd := &cobra.Command{
		Use:    "server",
		Short:  "Run coffer-server's code with profiling on SIGUSR1/SIGUSR2 (used by --profile-server)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var l slog.Level
			l.UnmarshalText([]byte(cfg.LogLevel))
			log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
			s, err := server.New(ctx, cfg, log)
			if err != nil {
				return err
			}
			if agentListen != "" {
				stop, err := serveNativeGRPC(cfg, s, agentListen)
				if err != nil {
					return err
				}
				defer stop()
			}
			sig := make(chan os.Signal, 2)
			signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
			go func() {
				var cpu *os.File
				for s := range sig {
					switch {
					case s == syscall.SIGUSR1 && cpu == nil && cpuFile != "":
						if cpu, err = os.Create(cpuFile); err == nil {
							pprof.StartCPUProfile(cpu)
						}
					case s == syscall.SIGUSR2:
						if cpu != nil {
							pprof.StopCPUProfile()
							cpu.Close()
							cpu = nil
						}
						if heapFile != "" {
							if f, err := os.Create(heapFile); err == nil {
								pprof.Lookup("heap").WriteTo(f, 0)
								f.Close()
							}
							var ms runtime.MemStats
							runtime.ReadMemStats(&ms)
							b, _ := json.MarshalIndent(map[string]any{
								"heap_inuse": ms.HeapInuse, "heap_sys": ms.HeapSys, "heap_released": ms.HeapReleased,
								"stack_inuse": ms.StackInuse, "next_gc": ms.NextGC, "sys": ms.Sys, "num_gc": ms.NumGC,
								"goroutines": runtime.NumGoroutine(),
							}, "", "  ")
							os.WriteFile(heapFile+".memstats.json", b, 0o644)
						}
					}
				}
			}()
			if err := s.Run(ctx); err != nil {
				return fmt.Errorf("server: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "data dir")
	f.StringVar(&cfg.Listen, "listen", cfg.Listen, "address")
	f.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "log level")
	f.StringVar(&cfg.Store, "store", cfg.Store, "bolt or etcd")
	f.StringSliceVar(&cfg.Etcd.Endpoints, "etcd-endpoints", nil, "etcd client URLs (--store etcd)")
	f.StringVar(&cfg.MasterKeyFile, "master-key-file", cfg.MasterKeyFile, "master key file")
	f.StringVar(&cpuFile, "cpuprofile", "", "CPU profile file (SIGUSR1 starts, SIGUSR2 stops)")
	f.StringVar(&heapFile, "memprofile", "", "heap profile file (written at SIGUSR2)")
	f.StringVar(&agentListen, "agent-listen", "", "experiment: also serve the agents' gRPC service on this address with gRPC's own HTTP/2 transport")
	return cmd
}

// serveNativeGRPC serves the broker's AgentService on its own listener with
// gRPC's native HTTP/2 transport (grpc.Server.Serve) instead of through
// net/http (grpc.Server.ServeHTTP, as coffer-server does to share one port
// with the REST API), with small per-connection buffers. It is an
// experiment for docs/benchmarks.md: what the server's memory would be with
// that transport. Same CA, same server certificate, same broker.
func serveNativeGRPC(cfg server.Config, s *server.Server, addr string) (stop func(), err error) {
	ca, _, err := identity.LoadOrCreateCA(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cert, err := ca.LoadOrIssueServerCert(cfg.DataDir, []string{"127.0.0.1"}, 90*24*time.Hour)
	if err != nil {
		return nil, err
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(identity.ServerTLSConfig(cert, ca))),
		grpc.ReadBufferSize(8<<10), grpc.WriteBufferSize(8<<10))
	cofferv1.RegisterAgentServiceServer(gs, s.Broker.Service())
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	go gs.Serve(ln)
	return gs.Stop, nil
}
