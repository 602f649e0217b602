// Command coffer is Coffer's command line interface.
package main

import (
	"fmt"
	"os"

	"coffer/internal/cli"
)

func main() {
	root := cli.NewRoot(os.Stdout, os.Stderr)
	err := root.Execute()
	if err != nil && err.Error() != "" {
		fmt.Fprintln(os.Stderr, "coffer:", err)
	}
	os.Exit(cli.ExitCode(err))
}
