// Command envapp is an application that takes its database password from
// the environment, as most do, and never reads /run/secrets itself: run it
// under `coffer exec` (see examples/README.md). It prints a fingerprint of
// the value (never the value), then runs until SIGTERM (or, with
// --ignore-term, until SIGINT or SIGKILL).
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	v, ok := os.LookupEnv("DB_PASSWORD")
	if !ok {
		fmt.Fprintln(os.Stderr, "envapp: DB_PASSWORD is not set")
		os.Exit(1)
	}
	sum := sha256.Sum256([]byte(v))
	fmt.Printf("envapp: pid %d started with DB_PASSWORD sha256:%s\n", os.Getpid(), hex.EncodeToString(sum[:8]))
	// --ignore-term plays an application that does not stop on SIGTERM
	// (coffer exec kills it after its grace period).
	ignoreTerm := len(os.Args) > 1 && os.Args[1] == "--ignore-term"
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	for sig := range sigs {
		if ignoreTerm && sig == syscall.SIGTERM {
			fmt.Printf("envapp: pid %d ignoring %v\n", os.Getpid(), sig)
			continue
		}
		fmt.Printf("envapp: pid %d stopping on %v\n", os.Getpid(), sig)
		return
	}
}
