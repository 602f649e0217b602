// Package runcwrap is coffer-agent's OCI runtime wrapper for Docker
// (`coffer-agent runc`, registered in Docker's "runtimes" and chosen with
// `docker run --runtime coffer`): it makes the first delivery race-free on
// plain Docker without changing images.
//
// Docker's containerd shim runs the wrapper instead of runc for every
// runtime command. The wrapper execs the real runc (a configured absolute
// path, never PATH) with the arguments untouched, except for `create`:
// there it first adds a createRuntime hook running `coffer-agent hook`
// (package hook) to the bundle's config.json, atomically, keeping the rest
// of the spec. runc runs the hook after it has set up the container's
// mounts and before pivot_root; the hook asks the agent over its root-only
// socket, and the agent, which identifies the container from Docker's
// lock-free container list and the kernel, writes the files below the
// container's root.
//
// Fail-open by default. A container labelled coffer.require-secrets=true
// (hook.RequireLabel; its own label or, failing that, its image's) is
// fail-closed: the wrapper reads the
// label from the engine at create and writes the OCI annotation
// coffer/require-secrets=true into the spec, so the hook refuses the start
// when it cannot reach the agent, and the agent refuses it when it cannot
// write the files in time. The wrapper refuses a create when it cannot
// read the labels at all (a misconfigured --docker-host shows at once).
package runcwrap
