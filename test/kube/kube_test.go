package kube

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"coffer/internal/containerdtest"
	"coffer/internal/nri"
)

// TestKubernetes runs Coffer on a real Kubernetes node (one cluster for
// all subtests, in order): kube-apiserver + kubelet v1.34 + containerd
// 2.2.9, coffer-server, and coffer-agent beside the kubelet with the
// DaemonSet's flags, enrolled with k8s.node=<node>. Pods are created with
// nodeName on the locally imported image (imagePullPolicy Never).
func TestKubernetes(t *testing.T) {
	e := newEnv(t)
	v1, v2 := "kube-v1-"+randID(), "kube-v2-"+randID()
	e.srv.MustCLI(t, v1, "secret", "put", "shop/db-password")
	// The binding selects on the pod's labels and namespace, and on the
	// node agent's k8s.node label.
	e.srv.MustCLI(t, "", "bind", "create", "web-db", "--secret", "shop/db-password", "--file", "db-password",
		"--selector", "app=web,k8s.namespace=shop", "--hosts", "k8s.node="+e.node)
	web := map[string]string{"app": "web", "pod-template-hash": "5d9c7b8f4"}
	var deployment *corev1.Pod

	// A Deployment's pod: its first instruction sees the file (NRI wrote
	// it before the process ran), next to the kubelet's ServiceAccount
	// token (the /run/coffer tmpfs does not hide /run/secrets).
	t.Run("DeploymentPodHasItsFileBeforeStart", func(t *testing.T) {
		e.t = t
		e.createPod(podOpts{ns: "shop", name: "web-1", labels: web})
		deployment = e.waitPod("shop", "web-1", "Running", 2*time.Minute, running)
		out := e.output(deployment)
		if !strings.Contains(out, present(v1)) {
			t.Errorf("the pod's first instruction did not see its file: %q\nagent:\n%s", out, tail(e.agent.Logs()))
		}
		if !strings.Contains(out, "TOKEN") {
			t.Errorf("the pod's ServiceAccount token is hidden: %q", out)
		}
		if got, ok := e.read(deployment); !ok || got != v1 {
			t.Errorf("the running pod does not hold the value (ok=%v)", ok)
		}
	})

	// A Job's pod (restartPolicy Never) reads its file and completes:
	// nothing runs beside it to keep it alive.
	t.Run("JobPodCompletes", func(t *testing.T) {
		e.t = t
		e.createPod(podOpts{ns: "shop", name: "job-1", labels: map[string]string{"app": "web", "job-name": "migrate"},
			restart: corev1.RestartPolicyNever, script: firstInstruction + "exit 0"})
		p := e.waitPod("shop", "job-1", "Succeeded", 2*time.Minute, func(p *corev1.Pod) bool {
			return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
		})
		if p.Status.Phase != corev1.PodSucceeded || len(p.Spec.Containers) != 1 {
			t.Fatalf("the Job's pod: phase %s, %d containers", p.Status.Phase, len(p.Spec.Containers))
		}
		if out := e.output(p); !strings.Contains(out, present(v1)) {
			t.Errorf("the Job's first instruction did not see its file: %q", out)
		}
	})

	// The same labels in another namespace get nothing, and so does a pod
	// whose labels claim the namespace.
	t.Run("OtherNamespaceGetsNothing", func(t *testing.T) {
		e.t = t
		e.createPod(podOpts{ns: "other", name: "web-1", labels: web})
		claims := map[string]string{"app": "web", "k8s.namespace": "shop"}
		e.createPod(podOpts{ns: "other", name: "claims-shop", labels: claims})
		var pods []*corev1.Pod
		for _, name := range []string{"web-1", "claims-shop"} {
			p := e.waitPod("other", name, "Running", 2*time.Minute, running)
			if out := e.output(p); !strings.Contains(out, "MISSING") {
				t.Errorf("other/%s's first instruction saw a file: %q", name, out)
			}
			pods = append(pods, p)
		}
		// Reported to the server (with shop/web-1), and still nothing.
		e.eventually("the pods reported", 30*time.Second, func() bool { return e.servedContainers() >= 3 })
		for _, p := range pods {
			if _, ok := e.read(p); ok {
				t.Errorf("other/%s got the secret", p.Name)
			}
		}
	})

	// A pod forged straight through the node's CRI (what root on the node,
	// or a stolen agent key, can do) with the namespace and labels of the
	// bound pods and the uid of a real pod of this node in another
	// namespace: coffer-server (--kubeconfig) finds that uid bound here in
	// namespace "other", refuses the claim and sends it nothing. (A forged
	// uid the API server does not know is held and sent nothing; the
	// kubelet kills such a sandbox within seconds, so it is not waited for
	// here: test/security drives that case.)
	t.Run("ForgedPodGetsNothing", func(t *testing.T) {
		e.t = t
		real := e.getPod("other", "web-1")
		p := e.d.RunPod(t, containerdtest.Pod{Namespace: "shop", Name: "web-forged", UID: string(real.UID), Labels: web})
		id := e.d.RunContainer(t, p, containerdtest.Container{Name: "app"})
		e.eventually("the forged pod refused", 60*time.Second, func() bool { return e.podRefusals() > 0 })
		if out, err := e.d.Exec(t, id, "cat", SecretFile); err == nil {
			t.Fatalf("the forged pod got the secret (%d bytes)", len(out))
		}
	})

	// A rotation reaches the running pod's file.
	t.Run("RotationReachesRunningPods", func(t *testing.T) {
		e.t = t
		if deployment == nil {
			t.Skip("no Deployment pod")
		}
		e.srv.MustCLI(t, v2, "secret", "put", "shop/db-password")
		e.eventually("the new version in the running pod", 30*time.Second, func() bool {
			got, ok := e.read(deployment)
			return ok && got == v2
		})
	})

	// Fail-closed: a pod that requires its secrets (Coffer's annotation and
	// NRI's required-plugins, with containerd's default validator on) does
	// not start while the agent is down, and starts by itself, its file
	// there at its first instruction, once the agent is back.
	t.Run("FailClosedPodWaitsForTheAgent", func(t *testing.T) {
		e.t = t
		e.agent.Stop()
		ann := map[string]string{
			nri.RequireAnnotation:                   "true",
			"required-plugins.noderesource.dev/pod": `["` + nri.PluginName + `"]`,
		}
		e.createPod(podOpts{ns: "shop", name: "strict-1", labels: web, ann: ann})
		p := e.waitPod("shop", "strict-1", "refused by NRI's validator", 2*time.Minute, func(p *corev1.Pod) bool {
			if running(p) {
				t.Fatalf("a pod requiring its secrets started while the agent was down")
			}
			for _, c := range p.Status.ContainerStatuses {
				if w := c.State.Waiting; w != nil && w.Reason == "CreateContainerError" && strings.Contains(w.Message, nri.PluginName) {
					return true
				}
			}
			return false
		})
		t.Logf("while the agent is down: %s: %s", p.Status.ContainerStatuses[0].State.Waiting.Reason, p.Status.ContainerStatuses[0].State.Waiting.Message)
		// Still not running a little later (the kubelet retried meanwhile).
		time.Sleep(3 * time.Second)
		if running(e.getPod("shop", "strict-1")) {
			t.Fatal("a pod requiring its secrets started while the agent was down")
		}
		back := time.Now()
		e.startAgent()
		p = e.waitPod("shop", "strict-1", "Running once the agent is back", 3*time.Minute, running)
		t.Logf("running %s after the agent was back", time.Since(back).Round(time.Second))
		if out := e.output(p); !strings.Contains(out, present(v2)) {
			t.Errorf("the pod's first instruction did not see its file: %q", out)
		}
	})

	// Nothing of the values on the host's disk: not under the kubelet's
	// root and pod logs, containerd's root and state, the server's, the
	// agent's and the tools' temporary directories; and in no log.
	t.Run("NothingOnTheHostsDisk", func(t *testing.T) {
		e.t = t
		for _, p := range []struct{ ns, name string }{{"shop", "web-1"}, {"shop", "strict-1"}, {"other", "web-1"}} {
			e.deletePod(p.ns, p.name)
		}
		e.srv.Stop()
		e.agent.Stop()
		for _, v := range []string{v1, v2} {
			for _, root := range []string{e.k.RootDir, e.k.PodLogsDir, e.d.Dir, e.dir, e.c.Dir} {
				if hits := grepTree(root, v); len(hits) > 0 {
					t.Errorf("value found on disk: %v", hits)
				}
			}
			if strings.Contains(e.srv.Logs(), v) || strings.Contains(e.agent.Logs(), v) || strings.Contains(e.k.Log(), v) {
				t.Error("value in a log")
			}
		}
	})
}
