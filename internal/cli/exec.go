package cli

import (
	"errors"
	"log/slog"

	"github.com/spf13/cobra"

	"coffer/internal/execwrap"
)

func newExecCmd() *cobra.Command {
	var envs, envFiles, waitFiles []string
	s := execwrap.Spec{}
	var quiet bool
	cmd := &cobra.Command{
		Use:   "exec [--env NAME=FILE]... [--env-file FILE]... [--wait] -- COMMAND [ARG]...",
		Short: "Run a command with delivered secret files in its environment (an entrypoint wrapper)",
		Long: `Run COMMAND with the contents of files the Coffer agent delivered (under
--dir, default /run/secrets) as environment variables of COMMAND only: never
in its argv or coffer exec's own, never in the image or container config
(docker inspect), never in anything coffer exec prints.

  --env NAME=FILE     variable NAME holds the exact bytes of FILE
  --env-file FILE     FILE holds NAME=VALUE lines (# comments, 'export ',
                      "quoted" or 'quoted' values; nothing is expanded)
  --wait-file FILE    wait for (and watch) FILE, without reading it

Without --wait a missing file is an error at once; with --wait coffer exec
waits for every file up to --timeout (then exits 1 naming the missing ones),
so the command never starts before its secrets: race-free even on plain
Docker.

By default coffer exec replaces itself with COMMAND (exec: COMMAND becomes
the container's main process; a rotation changes the files but not its
environment). With --restart-on-change (the binding contract
restart-process) it stays as a supervisor: it forwards signals to COMMAND,
and when a watched file changes it reads the new values and restarts
COMMAND in place: SIGTERM, up to --grace, then SIGKILL; if the new files
cannot be read the running COMMAND is left alone. It exits with COMMAND's
exit code (128+N when killed by signal N), 126 if COMMAND cannot run, 127 if
it is not found, 2 for bad flags, 1 for missing files or a timeout.

A static binary (CGO_ENABLED=0): copy it into an image or mount it
read-only. See docs/consumers.md.`,
		Example: `  coffer exec --env DB_PASSWORD=db-password -- ./server --port 8080
  coffer exec --env DB_PASSWORD=db-password --env-file app.env --wait --timeout 30s -- ./server
  coffer exec --env-file app.env --restart-on-change --grace 20s -- ./server
  coffer exec --wait --wait-file tls.key -- nginx -g 'daemon off;'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError(errors.New("no command: give it after --, e.g. coffer exec --env DB_PASSWORD=db-password -- ./server"))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, e := range envs {
				v, err := execwrap.ParseEnv(e)
				if err != nil {
					return usageError(err)
				}
				s.Env = append(s.Env, v)
			}
			s.EnvFiles, s.WaitFiles, s.Argv = envFiles, waitFiles, args
			level := slog.LevelInfo
			if quiet {
				level = slog.LevelWarn
			}
			s.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level})).With("component", "coffer-exec")
			code, err := execwrap.Run(cmdContext(cmd), &s)
			switch {
			case err != nil: // Run's code: 2 for bad flags, 1 for files, 126/127 for the command
				return &ExitError{Code: code, Err: err}
			case code != 0:
				return &ExitError{Code: code}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false) // everything after COMMAND is COMMAND's
	f.StringArrayVar(&envs, "env", nil, "NAME=FILE: put FILE's content in variable NAME (repeatable)")
	f.StringArrayVar(&envFiles, "env-file", nil, "FILE of NAME=VALUE lines to put in the environment (repeatable)")
	f.StringArrayVar(&waitFiles, "wait-file", nil, "FILE to wait for and watch without reading it (repeatable)")
	f.StringVar(&s.Dir, "dir", execwrap.DefaultDir, "directory of the delivered files")
	f.BoolVar(&s.Wait, "wait", false, "wait for missing files (up to --timeout) instead of failing at once")
	f.DurationVar(&s.Timeout, "timeout", execwrap.DefaultTimeout, "how long --wait waits")
	f.BoolVar(&s.RestartOnChange, "restart-on-change", false, "supervise COMMAND and restart it when a file changes (rotation contract restart-process)")
	f.DurationVar(&s.Grace, "grace", execwrap.DefaultGrace, "on a restart, time between SIGTERM and SIGKILL")
	f.DurationVar(&s.Poll, "poll", execwrap.DefaultPoll, "how often files are looked at while waiting or watching")
	f.BoolVar(&quiet, "quiet", false, "log only warnings and errors")
	return cmd
}
