// Command reloadserver is a tiny server in the manner of nginx, HAProxy or
// PgBouncer: it reads its key file at start and again on SIGHUP, keeping
// the old key if the new one cannot be read. Bind its key with
// `--rotation signal:SIGHUP` (see examples/README.md). It prints a
// fingerprint of the key it serves with (never the key), then runs until
// SIGTERM.
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
	path := "/run/secrets/tls.key"
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	key, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reloadserver:", err)
		os.Exit(1)
	}
	fmt.Printf("reloadserver: pid %d serving with key sha256:%s\n", os.Getpid(), fingerprint(key))
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	for sig := range sigs {
		if sig != syscall.SIGHUP {
			fmt.Printf("reloadserver: stopping on %v\n", sig)
			return
		}
		next, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "reloadserver: reload failed, keeping the old key:", err)
			continue
		}
		clear(key)
		key = next
		fmt.Printf("reloadserver: pid %d reloaded on SIGHUP, serving with key sha256:%s\n", os.Getpid(), fingerprint(key))
	}
}

func fingerprint(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}
