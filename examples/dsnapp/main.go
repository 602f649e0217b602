// Command dsnapp is an application configured by one DATABASE_URL, as many
// are: the URL is assembled by Coffer from several secrets (a templated
// secret, see docs/templates.md) and put in its environment by `coffer
// exec`. It prints the URL's host and user and a fingerprint of its
// password (never the password), then runs until SIGTERM.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	raw, ok := os.LookupEnv("DATABASE_URL")
	if !ok {
		fmt.Fprintln(os.Stderr, "dsnapp: DATABASE_URL is not set")
		os.Exit(1)
	}
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		fmt.Fprintln(os.Stderr, "dsnapp: DATABASE_URL is not a URL with a user") // never the URL: it holds the password
		os.Exit(1)
	}
	pw, _ := u.User.Password()
	sum := sha256.Sum256([]byte(pw))
	fmt.Printf("dsnapp: pid %d connecting to %s as %s with password sha256:%s\n", os.Getpid(), u.Host, u.User.Username(), hex.EncodeToString(sum[:8]))
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	sig := <-sigs
	fmt.Printf("dsnapp: pid %d stopping on %v\n", os.Getpid(), sig)
}
