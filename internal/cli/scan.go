package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"coffer/internal/scan"
)

// scanFlags are the options shared by `scan image` and `scan dir`.
type scanFlags struct {
	format      string
	failOn      string
	rules       []string
	ignore      string
	output      string
	maxFileSize int64
	progress    string
	platform    string
	insecure    bool
}

func newScanCmd() *cobra.Command {
	sf := &scanFlags{}
	cmd := &cobra.Command{
		Use:   "scan",
		Short: "Find secrets baked into container images",
		Long: `scan finds secrets baked into container images and directories: every
layer (deleted files included), archives inside them, the image config.

Exit status: 0 clean, 1 findings at or above --fail-on, 2 error.
See docs/scan.md for the rules file format and .cofferignore.`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&sf.format, "format", "table", "output format: table, json or sarif")
	pf.StringVar(&sf.failOn, "fail-on", "low", "exit 1 on findings of this severity or higher: low, medium, high, critical, none")
	pf.StringArrayVar(&sf.rules, "rules", nil, "extra rules `file` (YAML), may repeat; same-ID rules replace built-ins")
	pf.StringVar(&sf.ignore, "ignore", "", "ignore `file` of fingerprints (default: .cofferignore in the scanned directory or the working directory)")
	pf.StringVarP(&sf.output, "output", "o", "", "write the report to `file` instead of standard output")
	pf.Int64Var(&sf.maxFileSize, "max-file-size", scan.DefaultMaxFileSize, "files larger than this many bytes are listed as not scanned")
	pf.StringVar(&sf.progress, "progress", "auto", "progress line on standard error: auto (on a terminal), always, never")
	cmd.AddCommand(newScanImageCmd(sf), newScanDirCmd(sf))
	return cmd
}

func newScanImageCmd(sf *scanFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image TARGET",
		Short: "Scan an image: docker save tarball, OCI layout, docker://NAME, or registry reference",
		Long: `Scan an image. TARGET is one of:

  PATH                 a docker save tarball, an OCI layout directory or OCI layout tar
  docker://NAME[:TAG]  an image in the local Docker engine
  REGISTRY/REPO[:TAG]  an image in a registry (credentials from ~/.docker/config.json)

oci:PATH, docker-archive:PATH and registry://REF force the kind.`,
		Example: `  coffer scan image docker://registry.example.com/web:1.2 --fail-on high
  docker save web:1.2 > web.tar && coffer scan image web.tar --format json
  coffer scan image registry.example.com/web:1.2 --platform linux/arm64 --format sarif`,
		Args: scanArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runScan(cmd, sf, func(ctx context.Context, s *scan.Scanner) (*scan.Report, error) {
				o := scan.OpenOptions{Insecure: sf.insecure}
				if sf.platform != "" {
					p, err := v1.ParsePlatform(sf.platform)
					if err != nil {
						return nil, usageError(fmt.Errorf("--platform: %w", err))
					}
					o.Platform = p
				}
				img, closeFn, err := scan.OpenImage(ctx, args[0], o)
				if err != nil {
					return nil, err
				}
				defer closeFn()
				return s.ScanImage(ctx, img, args[0])
			}, "")
		},
	}
	cmd.Flags().StringVar(&sf.platform, "platform", "", "platform to pick from a multi-platform image, e.g. linux/arm64 (default linux/<this machine>)")
	cmd.Flags().BoolVar(&sf.insecure, "insecure", false, "allow plain HTTP to the registry")
	return cmd
}

func newScanDirCmd(sf *scanFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "dir PATH",
		Short: "Scan a directory (a build context, an unpacked image)",
		Example: `  coffer scan dir . --fail-on medium
  coffer scan dir ./build-context --format json --rules extra-rules.yaml`,
		Args: scanArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runScan(cmd, sf, func(ctx context.Context, s *scan.Scanner) (*scan.Report, error) {
				return s.ScanDir(ctx, args[0])
			}, args[0])
		},
	}
}

func scanArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError(fmt.Errorf("%s: want %d argument(s), got %d", cmd.CommandPath(), n, len(args)))
		}
		return nil
	}
}

// runScan sets up the scanner from flags, runs do and writes the report.
// Errors exit 2; findings at or above --fail-on exit 1.
func runScan(cmd *cobra.Command, sf *scanFlags, do func(context.Context, *scan.Scanner) (*scan.Report, error), dir string) error {
	fail := func(err error) error {
		var ee *ExitError
		if errors.As(err, &ee) {
			return err
		}
		return &ExitError{Code: ExitUsage, Err: err}
	}
	var write func(io.Writer, *scan.Report, *scan.Rules) error
	switch sf.format {
	case "table":
		write = func(w io.Writer, r *scan.Report, _ *scan.Rules) error { return scan.WriteTable(w, r) }
	case "json":
		write = func(w io.Writer, r *scan.Report, _ *scan.Rules) error { return scan.WriteJSON(w, r) }
	case "sarif":
		write = scan.WriteSARIF
	default:
		return usageError(fmt.Errorf("--format %q: want table, json or sarif", sf.format))
	}
	threshold := scan.Severity(0)
	if sf.failOn != "none" {
		s, err := scan.ParseSeverity(sf.failOn)
		if err != nil {
			return usageError(fmt.Errorf("--fail-on: %w", err))
		}
		threshold = s
	}
	var extra [][]byte
	for _, f := range sf.rules {
		b, err := os.ReadFile(f)
		if err != nil {
			return usageError(fmt.Errorf("--rules: %w", err))
		}
		extra = append(extra, b)
	}
	rules, err := scan.LoadRules(extra...)
	if err != nil {
		return usageError(err)
	}
	ig, err := loadIgnore(sf.ignore, dir)
	if err != nil {
		return usageError(err)
	}
	errOut := cmd.ErrOrStderr()
	cfg := scan.Config{
		Rules: rules, Ignore: ig, MaxFileSize: sf.maxFileSize,
		Logger: slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: slog.LevelError})),
	}
	showProgress := sf.progress == "always" || (sf.progress == "auto" && isTerminal(errOut))
	if showProgress {
		cfg.Progress = func(p scan.Progress) {
			rate := float64(p.Bytes) / 1e6 / max(p.Elapsed.Seconds(), 1e-9)
			fmt.Fprintf(errOut, "\rscanning: %d/%d layers, %d files, %.0f MB, %.0f MB/s   ",
				p.LayersDone, p.Layers, p.Files, float64(p.Bytes)/1e6, rate)
		}
	}
	s, err := scan.New(cfg)
	if err != nil {
		return fail(err)
	}
	rep, err := do(cmd.Context(), s)
	if showProgress {
		fmt.Fprint(errOut, "\r\033[K")
	}
	if err != nil {
		return fail(err)
	}
	out := cmd.OutOrStdout()
	if sf.output != "" {
		f, err := os.Create(sf.output)
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		out = f
	}
	if err := write(out, rep, rules); err != nil {
		return fail(fmt.Errorf("writing report: %w", err))
	}
	if threshold > 0 {
		if n := rep.CountAtLeast(threshold); n > 0 {
			return &ExitError{Code: ExitFailure, Err: fmt.Errorf("%d finding(s) at or above %s", n, threshold)}
		}
	}
	return nil
}

// loadIgnore reads --ignore, else .cofferignore in dir (scan dir) or in the
// working directory.
func loadIgnore(flagPath, dir string) (*scan.Ignore, error) {
	if flagPath != "" {
		if _, err := os.Stat(flagPath); err != nil {
			return nil, fmt.Errorf("--ignore: %w", err)
		}
		return scan.LoadIgnore(flagPath)
	}
	paths := []string{".cofferignore"}
	if dir != "" {
		paths = append(paths, filepath.Join(dir, ".cofferignore"))
	}
	var ig *scan.Ignore
	seen := map[string]bool{}
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil || seen[abs] {
			continue
		}
		seen[abs] = true
		one, err := scan.LoadIgnore(p)
		if err != nil {
			return nil, err
		}
		ig = ig.Merge(one)
	}
	return ig, nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
