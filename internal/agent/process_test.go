package agent_test

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/agent"
	"coffer/internal/container"
	"coffer/internal/execstate"
	"coffer/internal/server"
)

// records is a fake ExecStateReader: each container's coffer exec record,
// as the container wrote it.
type records struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (f *records) Read(_ context.Context, id string, _ int) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.m[id]; ok {
		return b, nil
	}
	return nil, execstate.ErrNoRecord
}

func (f *records) set(id string, b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[id] = b
}

// record is what coffer exec writes for a process started with these
// file contents ("file=content").
func record(t *testing.T, restarts bool, files ...string) []byte {
	t.Helper()
	st := execstate.State{PID: 42, Restarts: restarts}
	for _, f := range files {
		name, content, _ := strings.Cut(f, "=")
		st.Files = append(st.Files, execstate.File{File: name, SHA256: execstate.Digest([]byte(content))})
	}
	b, err := execstate.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *syncLog) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

type holderView struct {
	ContainerID string `json:"container_id"`
	Version     uint64 `json:"version"`
	Pending     bool   `json:"pending"`
	Process     *struct {
		Version uint64 `json:"version"`
		State   string `json:"state"`
	} `json:"process"`
}

// waitHolder waits until the API shows container id's holder of secret
// as want ("v2 pending process v1 restart-pending"; "v2 current" without
// a process state).
func (r *rig) waitHolder(secret, id, want string) {
	r.t.Helper()
	var got string
	deadline := time.Now().Add(15 * time.Second)
	for {
		var show struct {
			Holders []holderView `json:"holders"`
		}
		r.call("GET", "/v1/secrets/"+secret, nil, &show)
		got = ""
		for _, h := range show.Holders {
			if h.ContainerID != id {
				continue
			}
			state := "current"
			if h.Pending {
				state = "pending"
			}
			got = "v" + strconv.FormatUint(h.Version, 10) + " " + state
			if h.Process != nil {
				got += " process v" + strconv.FormatUint(h.Process.Version, 10) + " " + h.Process.State
			}
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("holder %s of %s: %q, want %q", id, secret, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restart-process end to end through a real server: the agent reads coffer
// exec's record, matches its digests with what it wrote, and the rollout
// shows the file new and the process old (pending) until the record shows
// the restarted process; a garbage, forged or vanished record only changes
// that container's report, and a refused one is logged once.
func TestProcessStateReachesTheRollout(t *testing.T) {
	r := newRig(t)
	r.put("app/db", "d1")
	r.bindRotation("web-db", "app/db", "app=web", "restart-process")
	recs := &records{m: map[string][]byte{}}
	logs := &syncLog{}
	_, rt, d, _ := r.startAgentWith("node-1", agent.Config{ExecState: recs, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	rt.Start(container.Info{ID: "c1", Name: "web-1", Labels: map[string]string{"app": "web"}, PID: 100})
	waitValue(t, d, "c1", "db", "d1")
	r.waitHolder("app/db", "c1", "v1 current")
	// coffer exec started the process (after the first delivery, as
	// with --wait): the watch finds the record.
	recs.set("c1", record(t, true, "db=d1"))
	r.waitHolder("app/db", "c1", "v1 current process v1 current")

	// A rotation: the file is new, the process not yet.
	r.put("app/db", "d2")
	waitValue(t, d, "c1", "db", "d2")
	r.waitHolder("app/db", "c1", "v2 pending process v1 restart-pending")
	// coffer exec restarted it.
	recs.set("c1", record(t, true, "db=d2"))
	r.waitHolder("app/db", "c1", "v2 current process v2 current")

	// Hostile records: garbage is refused (logged once, nothing reported),
	// a forged one misreports only this container's own process. (A
	// current process is looked at again on the next delivery.)
	recs.set("c1", []byte("\x00\xffgarbage-record"))
	r.put("app/db", "d3")
	waitValue(t, d, "c1", "db", "d3")
	r.waitHolder("app/db", "c1", "v3 current")
	time.Sleep(2500 * time.Millisecond) // more polls of the same garbage
	if n := strings.Count(logs.String(), "coffer exec record in the container refused"); n != 1 {
		t.Fatalf("the refused record logged %d times:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "garbage-record") {
		t.Fatal("the record's content in the agent's log")
	}
	recs.set("c1", record(t, true, "db=not-what-the-agent-wrote", "other=x"))
	r.waitHolder("app/db", "c1", "v3 pending process v0 restart-pending")
	recs.set("c1", record(t, false, "db=d1")) // coffer exec without restarts, on an old value
	r.waitHolder("app/db", "c1", "v3 current process v1 stale")
}

// A none pin survives a server restart: the agent tells the new server
// what the container holds, and keeps its version through later
// rotations, while a new container gets the current one. (On the code
// before, the restarted server sent c1 app/db version 2.)
func TestNonePinSurvivesAServerRestart(t *testing.T) {
	r := newRig(t)
	r.put("app/db", "v1")
	r.bindRotation("web-db", "app/db", "app=web", "none")
	a, rt, d, _ := r.startAgent("node-1")
	rt.Start(container.Info{ID: "c1", Name: "web-1", Labels: map[string]string{"app": "web"}, PID: 7})
	waitValue(t, d, "c1", "db", "v1")
	r.put("app/db", "v2")
	r.waitHolder("app/db", "c1", "v1 current")

	addr := r.srv.Addr()
	r.cancel()
	<-r.done
	r.done <- nil // for the cleanup
	waitStats(t, a, func(s agent.Stats) bool { return !s.Connected })
	cfg := server.Defaults()
	cfg.DataDir = filepath.Join(r.dir, "server")
	cfg.Listen = addr
	ctx, cancel := context.WithCancel(context.Background())
	s, err := server.New(ctx, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	r.srv = s
	waitStats(t, a, func(s agent.Stats) bool { return s.Connected })
	r.waitHolder("app/db", "c1", "v1 current")
	r.put("app/db", "v3")
	rt.Start(container.Info{ID: "c2", Name: "web-2", Labels: map[string]string{"app": "web"}, PID: 8})
	waitValue(t, d, "c2", "db", "v3")
	time.Sleep(200 * time.Millisecond)
	if got := string(d.Files("c1")["db"].Value); got != "v1" {
		t.Fatalf("c1 holds %q after a server restart, want its pinned v1", got)
	}
	r.waitHolder("app/db", "c1", "v1 current")
}
