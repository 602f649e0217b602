package execwrap

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// The test binary plays two more parts, chosen before any test runs: the
// wrapper (EXECWRAP_SPEC holds a Spec as JSON: names and files, never a
// value) and the child (argv[1] == "execwrap-child").
func TestMain(m *testing.M) {
	if len(os.Args) > 2 && os.Args[1] == "execwrap-child" {
		childMain(os.Args[2], os.Args[3])
	}
	if spec := os.Getenv("EXECWRAP_SPEC"); spec != "" {
		var s Spec
		if err := json.Unmarshal([]byte(spec), &s); err != nil {
			fmt.Fprintln(os.Stderr, "bad spec:", err)
			os.Exit(99)
		}
		s.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
		code, err := Run(context.Background(), &s)
		if err != nil {
			fmt.Fprintln(os.Stderr, "wrapper:", err)
		}
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// childMain records its environment and signals in out, one line each:
// "start <pid> DB=<DB> A=<A> B=<B>", "hup <pid>", "term <pid>". Modes:
// "wait" (exit 7 on SIGTERM), "ignore-term", "exit3".
func childMain(mode, out string) {
	f, err := os.OpenFile(out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		os.Exit(98)
	}
	pid := os.Getpid()
	// Handlers first: a test signals the child as soon as it reads "start".
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM)
	fmt.Fprintf(f, "start %d DB=%s A=%s B=%s\n", pid, os.Getenv("DB"), os.Getenv("A"), os.Getenv("B"))
	if mode == "exit3" {
		os.Exit(3)
	}
	if mode == "orphan" {
		// A grandchild whose parent exits at once: it is re-parented to
		// pid 1 of the namespace, and becomes a zombie when it ends unless
		// pid 1 reaps it.
		exec.Command("/bin/sh", "-c", "(sleep 0.2 &)").Run()
		fmt.Fprintf(f, "orphaned %d\n", pid)
	}
	for sig := range sigs {
		switch {
		case sig == syscall.SIGHUP:
			fmt.Fprintf(f, "hup %d\n", pid)
		case mode == "ignore-term":
			fmt.Fprintf(f, "term-ignored %d\n", pid)
		default:
			fmt.Fprintf(f, "term %d\n", pid)
			os.Exit(7)
		}
	}
	time.Sleep(time.Hour)
}
