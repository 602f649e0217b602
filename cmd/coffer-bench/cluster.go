package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"coffer/internal/seal"
	"coffer/internal/testtools"
)

// cluster is an etcd member and several coffer-servers on it (fanout
// --servers): the first one initialized the prefix; the bench's REST
// client talks to it, the agents are spread over all of them.
type cluster struct {
	etcd    *exec.Cmd
	servers []*serverProc
}

func (c *cluster) Stop() {
	for _, s := range c.servers {
		s.Stop()
	}
	if c.etcd != nil {
		c.etcd.Process.Kill()
		c.etcd.Wait()
	}
}

// startCluster starts one etcd member (the binary scripts/test-tools.sh
// builds) and n coffer-servers with --store etcd and one master key, each
// with its own data dir under dir.
func (o *common) startCluster(ctx context.Context, dir string, n int) (*cluster, error) {
	bin := filepath.Join(testtools.Dir(), "etcd-"+testtools.EtcdVersion, "etcd")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("etcd: %w (run scripts/test-tools.sh etcd)", err)
	}
	var ports []string
	for range 3 {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		ports = append(ports, a)
	}
	client, peer, metrics := "http://"+ports[0], "http://"+ports[1], "http://"+ports[2]
	logf, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	c := &cluster{etcd: exec.Command(bin, "--name", "b1", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "b1="+peer,
		"--listen-metrics-urls", metrics, "--initial-cluster-state", "new")}
	c.etcd.Stdout, c.etcd.Stderr = logf, logf
	if err := c.etcd.Start(); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			c.Stop()
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(metrics + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("etcd not healthy within 30s; see %s", logf.Name())
		}
		time.Sleep(50 * time.Millisecond)
	}
	key := filepath.Join(dir, "master.key")
	if _, err := seal.CreateKeyFile(key); err != nil {
		return nil, err
	}
	for i := range n {
		sdir := filepath.Join(dir, fmt.Sprintf("server-%d", i))
		if err := os.MkdirAll(sdir, 0o700); err != nil {
			return nil, err
		}
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		bin, args, agentAddr, err := o.serverCommand(fmt.Sprintf("server-%d", i))
		if err != nil {
			return nil, err
		}
		s, err := launchServer(ctx, bin, sdir, addr, "server.log", o.ServerEnv,
			append(args, "--store", "etcd", "--etcd-endpoints", client, "--master-key-file", key)...)
		if err != nil {
			return nil, err
		}
		if agentAddr != "" {
			s.AgentAddr = agentAddr
		}
		c.servers = append(c.servers, s)
		if i == 0 {
			if err := s.connect(); err != nil {
				return nil, err
			}
		}
	}
	first := c.servers[0]
	for _, s := range c.servers {
		first.AgentAddrs = append(first.AgentAddrs, s.AgentAddr)
	}
	ok = true
	return c, nil
}

// pids are the servers' process ids.
func (c *cluster) pids() string {
	var p []string
	for _, s := range c.servers {
		p = append(p, fmt.Sprint(s.Pid()))
	}
	return strings.Join(p, ",")
}
