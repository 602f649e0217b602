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
	output      string // format: table, json, sarif
	format      string // deprecated spelling of --output
	outputFile  string
	failOn      string
	includeLow  bool
	rules       []string
	ignore      string
	maxFileSize int64
	progress    string
	platform    string
	insecure    bool
	importTo    string
}

func newScanCmd() *cobra.Command {
	sf := &scanFlags{}
	cmd := &cobra.Command{
		Use:   "scan",
		Short: "Find secrets baked into container images",
		Long: `scan finds secrets baked into container images and directories: every
layer (deleted files included), archives inside them, the image config.

Each finding has a confidence (high, medium, low) from its context: test and
fixture paths, documentation, example files, loopback and example hosts,
well-known default credentials, values printed in the package's own docs.
Low-confidence findings are listed apart and do not count for --fail-on
unless --include-low.

Exit status: 0 clean, 1 findings at or above --fail-on, 2 error.
See docs/scan.md for the rules file format and .cofferignore.`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVarP(&sf.output, "output", "o", "table", "output format: table, json or sarif")
	pf.StringVar(&sf.format, "format", "", "same as --output")
	_ = pf.MarkDeprecated("format", "use -o/--output table|json|sarif (and --output-file FILE)")
	pf.StringVar(&sf.outputFile, "output-file", "", "write the report to `file` instead of standard output")
	pf.StringVar(&sf.failOn, "fail-on", "low", "exit 1 on findings of this severity or higher: low, medium, high, critical, none")
	pf.BoolVar(&sf.includeLow, "include-low", false, "count low-confidence findings for --fail-on and write them to SARIF")
	pf.StringArrayVar(&sf.rules, "rules", nil, "extra rules `file` (YAML), may repeat; same-ID rules replace built-ins")
	pf.StringVar(&sf.ignore, "ignore", "", "ignore `file` of fingerprints (default: .cofferignore in the scanned directory or the working directory)")
	pf.Int64Var(&sf.maxFileSize, "max-file-size", scan.DefaultMaxFileSize, "files larger than this many bytes are listed as not scanned")
	pf.StringVar(&sf.progress, "progress", "auto", "progress line on standard error: auto (on a terminal), always, never")
	cmd.AddCommand(newScanImageCmd(sf), newScanDirCmd(sf))
	return cmd
}

func newScanImageCmd(sf *scanFlags) *cobra.Command {
	c := &conn{}
	cmd := &cobra.Command{
		Use:   "image TARGET",
		Short: "Scan an image: docker save tarball, OCI layout, docker://NAME, or registry reference",
		Long: `Scan an image. TARGET is one of:

  PATH                 a docker save tarball, an OCI layout directory or OCI layout tar
  docker://NAME[:TAG]  an image in the local Docker engine
  REGISTRY/REPO[:TAG]  an image in a registry (credentials from ~/.docker/config.json)

oci:PATH, docker-archive:PATH and registry://REF force the kind.

--import PREFIX stores the value of every high-confidence finding as a Coffer
secret PREFIX/<rule>-<n> (write-only, never printed) and prints the
"coffer bind create" commands that deliver them to the image's containers,
so the secrets can be removed from the image. It needs a server connection
(--addr, --token, --cacert or COFFER_ADDR, COFFER_TOKEN, COFFER_CACERT),
checks everything before it writes, and on any error removes what it wrote.`,
		Example: `  coffer scan image app.tar
  coffer scan image docker://myapp:1.4 --fail-on high
  coffer scan image registry.corp/team/app:1.4 -o sarif --output-file coffer.sarif
  coffer scan image ./oci-layout -o json --include-low
  coffer scan image docker://myapp:1.4 --import payments/myapp`,
		Args: scanArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var imp *importer
			if sf.importTo != "" {
				var err error
				if imp, err = newImporter(c, sf.importTo); err != nil {
					return err
				}
			}
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
			}, "", imp, args[0])
		},
	}
	cmd.Flags().StringVar(&sf.platform, "platform", "", "platform to pick from a multi-platform image, e.g. linux/arm64 (default linux/<this machine>)")
	cmd.Flags().BoolVar(&sf.insecure, "insecure", false, "allow plain HTTP to the registry")
	cmd.Flags().StringVar(&sf.importTo, "import", "", "store high-confidence findings as secrets under this `prefix` and print the bind commands (needs a server)")
	c.flags(cmd)
	return cmd
}

func newScanDirCmd(sf *scanFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "dir PATH",
		Short: "Scan a directory (a build context, an unpacked image)",
		Example: `  coffer scan dir .
  coffer scan dir ./build-context -o json --output-file findings.json
  coffer scan dir . --fail-on high --include-low`,
		Args: scanArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runScan(cmd, sf, func(ctx context.Context, s *scan.Scanner) (*scan.Report, error) {
				return s.ScanDir(ctx, args[0])
			}, args[0], nil, args[0])
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

// reportWriter picks the writer for -o.
func reportWriter(sf *scanFlags) (func(io.Writer, *scan.Report, *scan.Rules) error, error) {
	format := sf.output
	if sf.format != "" {
		if format != "table" && format != sf.format {
			return nil, usageError(fmt.Errorf("--format %q and -o %q disagree; use -o alone", sf.format, format))
		}
		format = sf.format
	}
	switch format {
	case "table":
		return func(w io.Writer, r *scan.Report, _ *scan.Rules) error { return scan.WriteTable(w, r) }, nil
	case "json":
		return func(w io.Writer, r *scan.Report, _ *scan.Rules) error { return scan.WriteJSON(w, r) }, nil
	case "sarif":
		return func(w io.Writer, r *scan.Report, rs *scan.Rules) error {
			return scan.WriteSARIF(w, r, rs, scan.SARIFOptions{IncludeLow: sf.includeLow})
		}, nil
	}
	return nil, usageError(fmt.Errorf("-o %q: want table, json or sarif (-o picks the format; write to a file with --output-file %s)", format, format))
}

// runScan sets up the scanner from flags, runs do and writes the report;
// with imp, it then imports the high-confidence findings. Errors exit 2
// (usage, unreadable input) or 1 (import); findings at or above --fail-on
// exit 1.
func runScan(cmd *cobra.Command, sf *scanFlags, do func(context.Context, *scan.Scanner) (*scan.Report, error), dir string, imp *importer, target string) error {
	fail := func(err error) error {
		var ee *ExitError
		if errors.As(err, &ee) {
			return err
		}
		return &ExitError{Code: ExitUsage, Err: err}
	}
	write, err := reportWriter(sf)
	if err != nil {
		return err
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
		Rules: rules, Ignore: ig, MaxFileSize: sf.maxFileSize, KeepValues: imp != nil,
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
	defer rep.Zero()
	out := cmd.OutOrStdout()
	if sf.outputFile != "" {
		f, err := os.Create(sf.outputFile)
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		out = f
	}
	if err := write(out, rep, rules); err != nil {
		return fail(fmt.Errorf("writing report: %w", err))
	}
	if imp != nil {
		// The import's summary goes where a person reads it: after a table
		// on stdout, else on stderr (stdout then holds JSON or SARIF).
		w := cmd.OutOrStdout()
		if sf.outputFile == "" && sf.output != "table" {
			w = errOut
		}
		if err := imp.run(cmd.Context(), w, rep, target); err != nil {
			return err
		}
	}
	if threshold > 0 {
		if n := rep.CountAtLeast(threshold, sf.includeLow); n > 0 {
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
