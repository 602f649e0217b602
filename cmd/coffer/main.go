// Command coffer is Coffer's command line interface.
package main

import (
	"os"

	"coffer/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
