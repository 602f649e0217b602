package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"coffer/internal/container"
	"coffer/internal/container/containerd"
	"coffer/internal/container/docker"
	"coffer/internal/hook"
	"coffer/internal/runcwrap"
)

const runcLong = `coffer-agent runc is an OCI runtime for Docker that makes the first delivery
race-free without changing images: registered in Docker's "runtimes"
and chosen per container with docker run --runtime coffer, it passes every
runc command through, untouched, to the real runc (--runc, an absolute
path, never looked up in PATH), except create: there it first adds the
createRuntime hook "coffer-agent hook --socket <--hook-socket>" to the
bundle's config.json, so the agent (started with --hook-socket) writes the
container's files before its first instruction.

Its own flags come first and end with "--"; runc's arguments follow:

  #!/bin/sh
  exec /usr/local/bin/coffer-agent runc --runc /usr/bin/runc -- "$@"

Fail-open: a container starts when the agent cannot be reached (its files
follow once the agent sees it run). A container labelled
coffer.require-secrets=true does not start without its files (docker run
reports why; start it again once the agent is back). See docs/consumers.md.`

// runcCommand is `coffer-agent runc`, the Docker runtime wrapper.
func runcCommand(exit *int) *cobra.Command {
	return &cobra.Command{
		Use:                "runc [--runc PATH] [--hook-socket PATH] [--hook-timeout D] [--docker-host ADDR] -- RUNC-ARGS...",
		Short:              "OCI runtime wrapper for Docker (--runtime coffer): runc, plus the coffer hook at create",
		Long:               runcLong,
		DisableFlagParsing: true,
		RunE: func(c *cobra.Command, args []string) error {
			*exit = runcMain(c, args)
			return nil
		},
	}
}

func runcMain(c *cobra.Command, args []string) int {
	cfg := runcwrap.Config{Stderr: os.Stderr}
	var dockerHost string
	f := pflag.NewFlagSet("runc", pflag.ContinueOnError)
	f.SetOutput(io.Discard)
	f.StringVar(&cfg.Runc, "runc", runcwrap.DefaultRunc, "the real runc (an absolute path)")
	f.StringVar(&cfg.Socket, "hook-socket", hook.DefaultSocket, "the agent's hook socket (coffer-agent --hook-socket)")
	f.DurationVar(&cfg.HookTimeout, "hook-timeout", hook.DefaultTimeout, "how long the hook waits for the agent")
	f.StringVar(&dockerHost, "docker-host", "", "the Docker engine, for the container's coffer.require-secrets label (default DOCKER_HOST or the local socket)")
	i := slices.Index(args, "--")
	if i < 0 {
		if slices.ContainsFunc(args, func(a string) bool { return a == "-h" || a == "--help" }) {
			fmt.Fprintf(c.OutOrStdout(), "%s\n\nUsage:\n  coffer-agent %s\n\nFlags:\n%s", runcLong, c.Use, f.FlagUsages())
			return 0
		}
		fmt.Fprintln(os.Stderr, `coffer-runc: want "coffer-agent runc [flags] -- RUNC-ARGS..." (see coffer-agent runc --help)`)
		return 2
	}
	if err := f.Parse(args[:i]); err != nil {
		fmt.Fprintf(os.Stderr, "coffer-runc: %v (see coffer-agent runc --help)\n", err)
		return 2
	}
	if f.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "coffer-runc: unexpected argument %q before \"--\"\n", f.Arg(0))
		return 2
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "coffer-runc: own path: %v\n", err)
		return 1
	}
	cfg.Self = self
	var rt *docker.Runtime
	cfg.Lookup = func(ctx context.Context, id string) (container.Info, error) {
		if rt == nil {
			var err error
			if rt, err = docker.New(docker.Config{Host: dockerHost}); err != nil {
				return container.Info{}, err
			}
		}
		info, err := rt.Creating(ctx, id)
		if errors.Is(err, docker.ErrNotFound) || errors.Is(err, docker.ErrNotCreating) {
			return info, fmt.Errorf("%w: %w", runcwrap.ErrNotEngines, err)
		}
		return info, err
	}
	defer func() {
		if rt != nil {
			rt.Close()
		}
	}()
	return runcwrap.Run(cfg, args[i+1:])
}

// hookRuntime is the hook server's Runtime: containerd's CRI, or on a
// Docker host the engine's lock-free container list, there only when
// --hook-socket was given (the wrapper is opt-in; several agents on one
// Docker host would otherwise fight over the default socket). nil: off.
func hookRuntime(rt container.Runtime, ctrd *containerd.Runtime, hookFlag bool) hook.Runtime {
	if ctrd != nil {
		return ctrd
	}
	if d, ok := rt.(*docker.Runtime); ok && hookFlag {
		return hook.Docker{Engine: d}
	}
	return nil
}
