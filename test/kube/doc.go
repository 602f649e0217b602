// Package kube is Coffer's end-to-end tier on a real Kubernetes node: etcd,
// kube-apiserver and kubelet v1.34 (internal/kubetest) on a private
// containerd 2.2.9 with NRI (internal/containerdtest), a real coffer-server
// and a coffer-agent --runtime containerd run beside the kubelet with the
// DaemonSet's flags (test/testkit). Its tests and benchmarks are in the
// _test files; without root or the tools they skip, and fail instead under
// COFFER_REQUIRE_TOOLS=1.
package kube
