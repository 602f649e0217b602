package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"coffer/internal/hook"
)

// hookCommand is `coffer-agent hook`: the OCI createRuntime hook for nodes
// whose containerd (1.6, 1.7 with NRI off) or CRI-O has no NRI.
func hookCommand(exit *int) *cobra.Command {
	var socket string
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "hook",
		Short: "OCI createRuntime hook: ask the local agent to deliver a container's secrets before it starts",
		Long: `coffer-agent hook is run by the container runtime as an OCI createRuntime
hook (containerd's base_runtime_spec, CRI-O's hooks.d), with the container's
OCI state on stdin. It asks the agent on --socket to write the container's
files into a tmpfs at the target directory before the container's first
instruction, and exits:

  0  the container may start (also when the agent cannot be reached in
     --timeout: fail-open, its files follow once the agent serves it)
  1  a pod annotated coffer/require-secrets=true whose files could not be
     written: the start fails and the kubelet retries with its back-off
  2  the OCI state on stdin could not be read

What it prints goes to stderr, which the runtime records when the hook
fails. See docs/kubernetes.md.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				*exit = hook.ExitUsage
				return fmt.Errorf("hook takes no arguments (the OCI state comes on stdin), got %q", args)
			}
			return nil
		},
		RunE: func(*cobra.Command, []string) error {
			*exit = hook.Run(os.Stdin, os.Stderr, socket, timeout)
			return nil
		},
	}
	c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		*exit = hook.ExitUsage // a misconfigured hook: exit 2, like bad input
		return err
	})
	c.Flags().StringVar(&socket, "socket", hook.DefaultSocket, "the agent's hook socket (coffer-agent --hook-socket)")
	c.Flags().DurationVar(&timeout, "timeout", hook.DefaultTimeout, "how long to wait for the agent before letting the container start (or refusing it, for a pod that requires its secrets)")
	return c
}
