package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkKubernetes measures Coffer on a real kubelet node (issue 12 §5);
// run it once: go test -run '^$' -bench Kubernetes -benchtime 1x ./test/kube/
//
//   - PodStart: pods created one at a time, in blocks of 5 with the agent up
//     and then with it stopped: the share of pods whose first instruction saw the file,
//     and the pod start (API create → the container's StartedAt in the CRI)
//     with and without the agent.
//   - Node110: 110 pods on the node (the kubelet's default maxPods), 100 of
//     them bound: rotation to the 100 (from the PUT returning, and from it
//     being sent, to the new value in each pod's file, read through
//     /proc/<pid>/root) and the agent's RSS.
//
// Sizes: COFFER_KUBE_BENCH_PODS (PodStart pods per phase, default 20),
// COFFER_KUBE_BENCH_ROTATIONS (default 10).
func BenchmarkKubernetes(b *testing.B) {
	e := newEnv(b)
	e.srv.MustCLI(b, "bench-v0-"+randID(), "secret", "put", "shop/db-password")
	e.srv.MustCLI(b, "", "bind", "create", "web-db", "--secret", "shop/db-password", "--file", "db-password",
		"--selector", "app=web,k8s.namespace=shop", "--hosts", "k8s.node="+e.node)
	b.Logf("load average at start: %s", loadavg())
	b.Run("PodStart", func(b *testing.B) {
		e.t = b
		n := envInt("COFFER_KUBE_BENCH_PODS", 20)
		value := "bench-start-" + randID()
		e.putSecret(value)
		for i := 0; i < b.N; i++ {
			// In blocks of 5, the agent up then down, so that the machine's
			// load (shared, and changing by the minute) weighs on both alike.
			var with, without []time.Duration
			presentN := 0
			for blk := 0; blk*5 < n; blk++ {
				m := min(5, n-blk*5)
				for j := range m {
					d, ok := e.timedPod(fmt.Sprintf("start-a-%d-%d-%d", i, blk, j), value)
					with = append(with, d)
					if ok {
						presentN++
					}
				}
				e.agent.Stop()
				for j := range m {
					d, _ := e.timedPod(fmt.Sprintf("start-n-%d-%d-%d", i, blk, j), value)
					without = append(without, d)
				}
				e.startAgent()
			}
			e.deleteAll("shop")
			slices.Sort(with)
			slices.Sort(without)
			b.ReportMetric(100*float64(presentN)/float64(n), "%present")
			b.ReportMetric(ms(pct(with, 50)), "start-p50-ms")
			b.ReportMetric(ms(pct(without, 50)), "start-noagent-p50-ms")
			b.ReportMetric(ms(pct(with, 50)-pct(without, 50)), "overhead-p50-ms")
			b.Logf("pod start, %d pods each: file present at the first instruction in %d/%d; API create → container started: with the agent p50 %v p90 %v max %v; without p50 %v p90 %v max %v; load %s",
				n, presentN, n, pct(with, 50), pct(with, 90), with[len(with)-1], pct(without, 50), pct(without, 90), without[len(without)-1], loadavg())
		}
	})
	b.Run("Node110", func(b *testing.B) {
		e.t = b
		rotations := envInt("COFFER_KUBE_BENCH_ROTATIONS", 10)
		for i := 0; i < b.N; i++ {
			value := "bench-node-" + randID()
			e.putSecret(value)
			start := time.Now()
			var bound []string
			errs := make([]error, 110)
			var wg sync.WaitGroup
			for j := range 110 {
				labels := map[string]string{"app": "web"}
				if j >= 100 {
					labels["app"] = "idle"
				} else {
					bound = append(bound, fmt.Sprintf("node-%d-%d", i, j))
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					o := podOpts{ns: "shop", name: fmt.Sprintf("node-%d-%d", i, j), labels: labels}
					_, errs[j] = e.cs.CoreV1().Pods("shop").Create(context.Background(), e.pod(o), metav1.CreateOptions{})
				}()
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					b.Fatalf("create pod: %v", err)
				}
			}
			e.eventually("110 pods running", 15*time.Minute, func() bool { return e.runningPods("shop") >= 110 })
			up := time.Since(start)
			e.eventually("110 pods served", 2*time.Minute, func() bool { return e.servedContainers() >= 110 })
			pids := make([]int, len(bound))
			for j, name := range bound {
				pids[j] = e.hostPid(containerID(e.getPod("shop", name)))
			}
			e.eventually("the value in the 100 bound pods", 2*time.Minute, func() bool {
				for _, pid := range pids {
					if got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s", pid, SecretFile)); err != nil || string(got) != value {
						return false
					}
				}
				return true
			})
			// Let the kubelet and the agent finish the starts' work (status
			// updates, relists) before rotating.
			time.Sleep(envDur("COFFER_KUBE_BENCH_SETTLE", 20*time.Second))
			agentPid := pidOf("coffer-agent", "--node-name="+e.node)
			rssBefore, _ := rssKiB(agentPid)
			helpersBefore := childrenRSSKiB(agentPid)
			b.Logf("before the rotations: load %s", loadavg())
			cpuBefore := cpuTime(agentPid) + childrenCPUTime(agentPid)
			var fromReturn, fromSent []time.Duration
			for r := range rotations {
				next := fmt.Sprintf("bench-rot-%d-%s", r, randID())
				sent, returned, seen := e.rotate(next, pids)
				for _, at := range seen {
					fromReturn = append(fromReturn, at.Sub(returned))
					fromSent = append(fromSent, at.Sub(sent))
				}
			}
			cpuPer := (cpuTime(agentPid) + childrenCPUTime(agentPid) - cpuBefore) / time.Duration(rotations)
			rssAfter, _ := rssKiB(agentPid)
			helpersAfter := childrenRSSKiB(agentPid)
			hwm, _ := statusKiB(agentPid, "VmHWM:")
			slices.Sort(fromReturn)
			slices.Sort(fromSent)
			b.ReportMetric(ms(pct(fromReturn, 99)), "rotation-p99-ms")
			b.ReportMetric(ms(pct(fromSent, 99)), "rotation-p99-from-sent-ms")
			b.ReportMetric(float64(rssAfter)/1024, "agent-rss-MiB")
			b.ReportMetric(ms(cpuPer), "agent-cpu-ms/rotation")
			b.Logf("110 pods Running %v after the first create; rotation to 100 pods × %d: from the PUT returning p50 %v p99 %v max %v, from it being sent p50 %v p99 %v max %v; agent RSS with 110 pods %.1f MiB before the rotations, %.1f MiB after (peak %.1f MiB), its helper processes %.1f / %.1f MiB; CPU of the agent and its helpers per rotation %v; load %s",
				up.Round(time.Second), rotations, pct(fromReturn, 50), pct(fromReturn, 99), fromReturn[len(fromReturn)-1],
				pct(fromSent, 50), pct(fromSent, 99), fromSent[len(fromSent)-1], float64(rssBefore)/1024, float64(rssAfter)/1024,
				float64(hwm)/1024, float64(helpersBefore)/1024, float64(helpersAfter)/1024, cpuPer.Round(time.Millisecond), loadavg())
			e.deleteAll("shop")
		}
	})
}

// timedPod creates a pod, waits until its container runs, and returns the
// time from the create call to the container's start (as the CRI records
// it) and whether its first instruction saw value.
func (e *env) timedPod(name, value string) (time.Duration, bool) {
	e.t.Helper()
	t0 := time.Now()
	e.createPod(podOpts{ns: "shop", name: name, labels: map[string]string{"app": "web"}})
	p := e.waitPod("shop", name, "Running", 2*time.Minute, running)
	st, err := e.d.CRI.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: containerID(p)})
	if err != nil {
		e.t.Fatalf("container status: %v", err)
	}
	started := time.Unix(0, st.GetStatus().GetStartedAt())
	return started.Sub(t0), strings.Contains(e.output(p), present(value))
}

// rotate writes value and waits until every pid's file holds it; it
// returns when the PUT was sent, when it returned, and when each file was
// first seen with the value (polled in a tight loop).
func (e *env) rotate(value string, pids []int) (sent, returned time.Time, seen []time.Time) {
	e.t.Helper()
	seen = make([]time.Time, len(pids))
	done := make(chan struct{})
	left := len(pids)
	go func() {
		defer close(done)
		deadline := time.Now().Add(2 * time.Minute)
		for left > 0 && time.Now().Before(deadline) {
			for j, pid := range pids {
				if !seen[j].IsZero() {
					continue
				}
				if got, err := os.ReadFile(fmt.Sprintf("/proc/%d/root%s", pid, SecretFile)); err == nil && string(got) == value {
					seen[j] = time.Now()
					left--
				}
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	sent = time.Now()
	e.putSecret(value)
	returned = time.Now()
	<-done
	if left > 0 {
		e.t.Fatalf("%d of %d pods did not get the rotation within 2 min", left, len(pids))
	}
	return sent, returned, seen
}

// putSecret writes shop/db-password through the REST API (no CLI process
// start in the measured time).
func (e *env) putSecret(value string) {
	e.t.Helper()
	ca, err := os.ReadFile(e.srv.CA)
	if err != nil {
		e.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	if e.hc == nil {
		e.hc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	}
	body, _ := json.Marshal(map[string]string{"value": base64.StdEncoding.EncodeToString([]byte(value))})
	req, _ := http.NewRequest(http.MethodPut, "https://"+e.srv.Addr+"/v1/secrets/shop/db-password", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e.srv.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(req)
	if err != nil {
		e.t.Fatalf("put secret: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		e.t.Fatalf("put secret: %s", resp.Status)
	}
}

// hostPid is the host pid of a CRI container's process.
func (e *env) hostPid(id string) int {
	e.t.Helper()
	st, err := e.d.CRI.ContainerStatus(context.Background(), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		e.t.Fatalf("container status %s: %v", id, err)
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(st.GetInfo()["info"]), &info); err != nil || info.Pid == 0 {
		e.t.Fatalf("no pid for %s: %v", id, err)
	}
	return info.Pid
}

func (e *env) runningPods(ns string) int {
	l, err := e.cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return 0
	}
	n := 0
	for i := range l.Items {
		if running(&l.Items[i]) {
			n++
		}
	}
	return n
}

// deleteAll deletes the pods of namespace ns and waits until the kubelet
// has removed them.
func (e *env) deleteAll(ns string) {
	e.t.Helper()
	grace := int64(0)
	ctx := context.Background()
	if err := e.cs.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &grace}, metav1.ListOptions{}); err != nil {
		e.t.Fatalf("delete pods: %v", err)
	}
	e.eventually("pods of "+ns+" gone", 10*time.Minute, func() bool {
		l, err := e.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 0
	})
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := (len(ds)*p + 99) / 100
	if i > 0 {
		i--
	}
	return ds[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// cpuTime is a process's user + system CPU time (/proc/<pid>/stat, in
// clock ticks of 10 ms).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.Atoi(f[11])
	k, _ := strconv.Atoi(f[12])
	return time.Duration(u+k) * 10 * time.Millisecond
}

// childrenCPUTime is cpuTime of a process's children.
func childrenCPUTime(pid int) time.Duration {
	var total time.Duration
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		c, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if ppid, err := statusKiB(c, "PPid:"); err == nil && ppid == pid {
			total += cpuTime(c)
		}
	}
	return total
}

func envDur(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
