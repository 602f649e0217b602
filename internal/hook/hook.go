// Package hook is coffer-agent's OCI-hook fallback for Kubernetes nodes whose
// runtime has no NRI (containerd 1.6, 1.7 with NRI off, CRI-O): it makes the
// first delivery into a pod's container race-free there too.
//
// The runtime runs `coffer-agent hook` as a createRuntime hook: after runc
// set up the container's mounts, before it pivots into the container's root
// and long before the first instruction, in the host's namespaces, with the
// OCI state (id, pid, bundle, annotations) on stdin. The hook sends the
// state to the agent over a root-only unix socket (Server) and exits with
// the agent's verdict. The agent believes nothing the caller says beyond
// the container id and the pid, and checks both:
//
//   - the container's identity (pod labels, namespace, name, image) comes
//     from the CRI by the container id, and its pod from the sandbox id the
//     CRI recorded (annotations that disagree with it are refused as forged);
//     the CRI must report the container as being created;
//   - the pid must be that container's process held before pivot_root: in
//     its cgroup, in a mount namespace of its own, its root still its
//     parent's, its working directory (which runc sets to the container's
//     root) a mount point there. That directory, read from the kernel and
//     never from the caller's bundle, is where the files go.
//
// It then runs the agent's prestart path (agent.Prepare, a bounded wait for
// the server's answer, agent.StartNow), with deliveries for that container
// sent below its root while the hook holds it (Gate), and answers. Nothing
// in an answer is a secret: a caller of the socket learns whether the
// container may start, never what it holds.
//
// Fail-open by default: a hook that cannot reach the agent, or an agent that
// does not hold the container's files in time, lets the container start;
// its files follow as soon as they come. Fail-closed for a pod annotated
// coffer/require-secrets=true (nri.RequireAnnotation): the agent refuses
// the start, and so does the hook when it cannot reach the agent and the
// annotation reached the OCI annotations (containerd's pod_annotations;
// CRI-O passes them); the kubelet retries with its back-off.
package hook

import (
	"errors"

	"coffer/internal/nri"
)

// DefaultSocket is where the agent listens for its hook.
const DefaultSocket = "/run/coffer/hook.sock"

// RequireAnnotation is the pod annotation that makes a pod fail-closed.
const RequireAnnotation = nri.RequireAnnotation

// Exit codes of the hook.
const (
	ExitStart  = 0 // the container may start
	ExitRefuse = 1 // a pod that requires its secrets does not start (the kubelet retries)
	ExitUsage  = 2 // bad input: the OCI state on stdin could not be read
)

// Sentinel errors, returned wrapped.
var (
	// ErrBadState: the OCI state (on stdin, or in a request) is malformed
	// or out of bounds; the message names the field.
	ErrBadState = errors.New("bad OCI state")
	// ErrUnreachable: the agent's socket could not be used in time.
	ErrUnreachable = errors.New("coffer-agent unreachable")
	// ErrRefused: the agent refused the request (forged or unknown
	// container, not a container being created).
	ErrRefused = errors.New("refused")
)
