package agent

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/container"
	"coffer/internal/container/fake"
	"coffer/internal/deliver/memory"
	"coffer/internal/execstate"
	"coffer/internal/secret"
)

// noRecord is an ExecStateReader for containers without coffer exec, the
// common case on a real node (execstate.ProcReader finds no record).
type noRecord struct{}

func (noRecord) Read(context.Context, string, int) ([]byte, error) { return nil, execstate.ErrNoRecord }

// BenchmarkRotation delivers a rotation (a batch with a new version of each
// container's secret and each container's desired state) to n containers
// through the agent's own handling path: handle, the per-container workers,
// the memory Deliverer, and the acknowledgements on the send queue. The
// stream itself (gRPC, TLS, protobuf) is not in it. One op is one delivered
// file: ns/op and allocs/op are per file.
func BenchmarkRotation(b *testing.B) {
	for _, bc := range []struct {
		name       string
		containers int
		exec       bool // an ExecStateReader, as coffer-agent has
		onApply    bool // a memory OnApply hook, as coffer-bench has
	}{
		{"fanout/containers=10", 10, false, true},
		{"node/containers=100", 100, true, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			// Values of earlier rotations leave at once, as they do when
			// rotations are more than ValueGrace apart.
			cfg := Config{Runtime: fake.New(), ValueGrace: time.Nanosecond}
			if bc.exec {
				cfg.ExecState = noRecord{}
			}
			mcfg := memory.Config{}
			if bc.onApply {
				mcfg.OnApply = func(_ string, files []secret.File) {
					for _, f := range files {
						f.Value.Zero()
					}
				}
			}
			cfg.Deliverer = memory.New(mcfg)
			a := New(cfg)
			send := make(chan *cofferv1.AgentMessage, 4*bc.containers+16)
			a.send = send
			ids := make([]string, bc.containers)
			for i := range ids {
				ids[i] = fmt.Sprintf("c%04d", i)
				a.running[ids[i]] = container.Info{ID: ids[i], Name: "bench-" + ids[i], PID: 1000 + i}
			}
			ctx := context.Background()
			version := uint64(0)
			rotate := func() *cofferv1.ServerMessage {
				version++
				vals := make([]*cofferv1.SecretValue, len(ids))
				desired := make([]*cofferv1.Desired, len(ids))
				for i, id := range ids {
					name := "bench/" + id
					vals[i] = &cofferv1.SecretValue{Secret: name, Version: version, Value: []byte(fmt.Sprintf("value-%s-%08d-xxxxxxxxxxxxxxxx", id, version))}
					desired[i] = &cofferv1.Desired{ContainerId: id, Generation: version, Files: []*cofferv1.FileRef{
						{Secret: name, Version: version, File: "secret", Mode: 0o400},
					}}
				}
				return &cofferv1.ServerMessage{Msg: &cofferv1.ServerMessage_Batch{Batch: &cofferv1.Batch{
					Values: &cofferv1.Values{Values: vals}, Desired: desired}}}
			}
			deliver := func(m *cofferv1.ServerMessage) {
				a.handle(ctx, m)
				for range ids {
					if ack := (<-send).GetApplied(); ack == nil || ack.Error != "" {
						b.Fatalf("ack %v", ack)
					}
				}
			}
			deliver(rotate()) // the first delivery: targets exist from here on
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuTime()
			// Messages are built ahead, a chunk at a time, outside the timer.
			var chunk []*cofferv1.ServerMessage
			for done := 0; done < b.N; done += len(ids) {
				if len(chunk) == 0 {
					b.StopTimer()
					for range min(64, (b.N-done+len(ids)-1)/len(ids)) {
						chunk = append(chunk, rotate())
					}
					b.StartTimer()
				}
				deliver(chunk[0])
				chunk = chunk[1:]
			}
			b.StopTimer()
			cpu := cpuTime() - cpu0 // includes building the messages (and GC)
			// Rotations delivered len(ids) files each: report per file.
			files := float64((b.N + len(ids) - 1) / len(ids) * len(ids))
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/files, "ns/file")
			b.ReportMetric(float64(cpu.Nanoseconds())/files, "cpu-ns/file")
		})
	}
}

// cpuTime is the CPU time (user and system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
